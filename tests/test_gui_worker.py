"""Worker threads: reference cycles die on the GUI thread, never on a worker.

A cycle collected on a worker thread can hold a stale widget wrapper whose
``~QObject`` then deadlocks against the GUI thread (seen with the explainer
compiling its kernels while an old window was still garbage).
"""

from __future__ import annotations

import gc
import threading

from explorer.worker import TaskSlot


class _Probe:
    """Records the thread that finalises it."""

    def __init__(self, where: list[int]) -> None:
        self.where = where
        self.me = self  # a cycle: only the cyclic collector frees it

    def __del__(self) -> None:
        self.where.append(threading.get_ident())


def test_cycles_made_on_a_worker_are_collected_on_the_gui_thread(qtbot):
    slot = TaskSlot("gc-test")
    assert not gc.isenabled()  # the automatic collector is off once a worker exists
    where: list[int] = []

    def work(progress, cancel):
        _Probe(where)
        # enough tracked allocations to trigger an automatic collection here
        return [[] for _ in range(50_000)]

    with qtbot.waitSignal(slot.succeeded, timeout=20000) as blocker:
        slot.start(work)
    assert len(blocker.args[0]) == 50_000  # kept alive: the GUI timer sees a full gen 0
    qtbot.waitUntil(lambda: bool(where), timeout=10000)
    assert where == [threading.get_ident()]
    slot.wait()


def test_model_cache_key_follows_the_model_code(tmp_path, monkeypatch):
    """Another release of the training code trains anew instead of showing an old model."""
    from core.config import TrainConfig
    from explorer import worker

    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n")
    cfg = TrainConfig()
    first = worker.model_cache_path([str(corpus)], cfg)
    assert worker.model_cache_path([str(corpus)], cfg) == first
    monkeypatch.setattr("core.warmup.source_digest", lambda: "another release")
    assert worker.model_cache_path([str(corpus)], cfg) != first


def test_warm_up_runs_on_the_explainer_thread_unless_a_request_overtakes_it(qtbot):
    from explorer.worker import Explainer

    ex = Explainer()
    try:
        gate = threading.Event()
        ran: list[str] = []
        with qtbot.waitSignal(ex.ready, timeout=10000):
            ex.request(lambda p: ran.append(threading.current_thread().name) or p, "a")
        ex.warm(lambda: ran.append("warm " + str(threading.current_thread() is
                                                 threading.main_thread())))
        qtbot.waitUntil(lambda: ex.warming == 0, timeout=10000)
        assert ran[-1] == "warm False" and not ex.pending  # off the GUI thread, never pending
        # a warm-up queued behind a busy request is skipped when a newer request follows
        ex.request(lambda p: gate.wait(10) and p, "b")
        ex.warm(lambda: ran.append("late warm"))
        with qtbot.waitSignal(ex.ready, timeout=10000) as blocker:
            ex.request(lambda p: p, "c")
            gate.set()
        assert blocker.args[0] == "c" and "late warm" not in ran
        qtbot.waitUntil(lambda: ex.warming == 0, timeout=10000)
    finally:
        ex.stop()


def test_warm_up_explains_the_models_first_training_tokens(monkeypatch):
    from explorer import explanation

    calls = []
    monkeypatch.setattr(explanation, "explain_for_views",
                        lambda memo, prompt, **kw: calls.append((prompt, kw)))

    class Stub:
        counts = type("C", (), {"stream": [5, 6, 7]})()

        def decode(self, ids):
            return " ".join(map(str, ids))

    explanation.warm_up(Stub(), {"method": "greedy", "max_len": 16})
    assert calls == [("5 6 7", {"method": "greedy", "max_len": 16})]
