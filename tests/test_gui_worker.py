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
