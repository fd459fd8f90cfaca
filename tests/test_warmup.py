"""Numba compilation as a stage: progress, a marker that skips a warm start, cancel."""

from __future__ import annotations

import pytest

from core import warmup
from core.corpus import Cancelled


@pytest.fixture
def small(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # platformdirs' cache on Linux
    monkeypatch.setattr(warmup, "WARMUP_LINES", 120)
    monkeypatch.setattr(warmup, "_workers", lambda: 1)  # the workload alone, in this process
    return tmp_path


def test_compiling_reports_progress_and_is_skipped_once_done(small):
    seen = []
    assert not warmup.kernels_ready()
    spent = warmup.compile_kernels(lambda st, fr, info=None: seen.append((st, fr)))
    assert spent > 0
    assert {st for st, _ in seen} == {warmup.STAGE}
    fr = [f for _, f in seen]
    assert fr[0] == 0.0 and fr[-1] == 1.0
    assert all(a <= b for a, b in zip(fr, fr[1:], strict=False))
    assert len(set(fr)) > 8  # it moves inside the warm-up, not only at its ends
    assert warmup.marker_path().is_relative_to(small)
    assert warmup.kernels_ready()
    assert warmup.compile_kernels() == 0.0  # warm: nothing to do


def test_an_edited_source_makes_the_marker_stale(small, monkeypatch):
    warmup.compile_kernels()
    first = warmup.marker_path()
    monkeypatch.setattr(warmup, "_fingerprint", lambda: "edited")
    assert warmup.marker_path() != first
    assert not warmup.kernels_ready()


def test_cancel_stops_the_warm_up(small):
    with pytest.raises(Cancelled):
        warmup.compile_kernels(cancel=lambda: True)
    assert not warmup.kernels_ready()


def test_every_recorded_signature_names_a_kernel_of_that_arity():
    import base64
    import inspect
    import pickle
    from pathlib import Path

    from core import precompile

    entries = precompile.load_manifest()
    assert len(entries) > 20
    for e in entries + precompile.load_manifest(Path(__file__).with_name("kernel_signatures.json")):
        disp = precompile.resolve(e["kernel"])
        n_args = len(inspect.signature(disp.py_func).parameters)
        for s in e["sigs"]:
            sig = pickle.loads(base64.b64decode(s))
            assert len(sig) == n_args, e["kernel"]


def test_assign_balances_the_recorded_seconds():
    from core.precompile import assign

    entries = [{"kernel": str(i), "seconds": s} for i, s in enumerate([5, 4, 3, 3, 1, 1])]
    parts = assign(entries, 2)
    loads = sorted(sum(e["seconds"] for e in p) for p in parts)
    assert loads == [8, 9]
    assert sorted(e["kernel"] for p in parts for e in p) == sorted(e["kernel"] for e in entries)
    twins = [{"kernel": "m:k.parallel", "seconds": 3}, {"kernel": "m:k.serial", "seconds": 3},
             {"kernel": "m:j", "seconds": 4}, {"kernel": "m:i", "seconds": 1}]
    parts = assign(twins, 2)
    assert {e["kernel"] for e in parts[0]} == {"m:k.parallel", "m:k.serial"}


def test_assign_keeps_kernels_sharing_a_large_callee_in_one_process():
    from core.precompile import assign

    own = {"query": 6.0, "seq": 1.0, "single": 1.0, "kn": 5.0, "vote": 2.0, "small": 0.5}
    entries = [{"kernel": "m:single", "seconds": 7, "closure": ["query", "single"]},
               {"kernel": "m:seq", "seconds": 7, "closure": ["query", "seq"]},
               {"kernel": "m:kn", "seconds": 5, "closure": ["kn"]},
               {"kernel": "m:vote", "seconds": 2, "closure": ["vote", "small"]}]
    parts = assign(entries, 2, own)
    together = [p for p in parts if {"m:single", "m:seq"} & {e["kernel"] for e in p}]
    assert len(together) == 1  # the 6 s callee compiles once
    loads = sorted(sum(e["cost"] for e in p) for p in parts)
    assert loads == [7.5, 8.0]  # marginal costs: the second query kernel costs 1 s
    # without recorded closures an entry costs its recorded seconds
    assert sorted(sum(e["cost"] for e in p) for p in assign(entries, 2)) == [9, 12]



def test_a_worker_done_early_takes_the_other_parts_last_kernels(tmp_path):
    """Each entry of a ``compile_parallel`` list is compiled by one worker: its own part
    first, then the other parts from their ends, whichever worker claims it first."""
    import json

    from core.precompile import _compile_part

    parts = [[{"kernel": f"core.nope:k{j}{i}", "cost": 1.0, "sigs": []} for i in range(3)]
             for j in range(2)]
    man = tmp_path / "signatures.json"
    man.write_text(json.dumps({"parts": parts}), encoding="utf-8")
    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "1-0").touch()  # worker 1 is compiling its first kernel
    logs = [tmp_path / "part-0.log", tmp_path / "part-1.log"]
    _compile_part(0, 2, logs[0], man)  # worker 0 goes on alone
    _compile_part(1, 2, logs[1], man)  # worker 1, back: all taken

    def begun(log):
        return [ln.split()[2] for ln in log.read_text().splitlines() if ln.startswith("begin")]

    assert begun(logs[0]) == ["core.nope:k00", "core.nope:k01", "core.nope:k02",
                              "core.nope:k12", "core.nope:k11"]
    assert begun(logs[1]) == []
    assert all(ln.startswith(("begin", "skip")) for ln in logs[0].read_text().splitlines())

def _cheap_entries(n):
    from core.precompile import load_manifest

    return sorted(load_manifest(), key=lambda e: e["seconds"])[:n]


def test_workers_compile_into_numba_cache(monkeypatch, tmp_path):
    from core.precompile import compile_parallel

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # the workers inherit it
    seen = []
    done = compile_parallel(2, seen.append, entries=_cheap_entries(3))
    assert done == 3
    assert seen[-1] == 1.0
    assert len(list(tmp_path.rglob("*.nbi"))) >= 3  # one index per kernel compiled


def test_cancel_kills_the_workers(monkeypatch, tmp_path):
    import time

    from core.precompile import compile_parallel

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        compile_parallel(2, cancel=lambda: True, entries=_cheap_entries(3))
    assert time.perf_counter() - t0 < 10  # not waiting for the workers to finish


def test_parallel_compilation_then_the_workload_report_one_rising_bar(small, monkeypatch):
    from core import precompile

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(small / "numba"))
    cheap = _cheap_entries(2)
    monkeypatch.setattr(precompile, "load_manifest", lambda path=None: cheap)
    seen = []
    warmup.compile_kernels(lambda st, fr, info=None: seen.append((fr, (info or {})["part"])),
                           workers=2)
    fr = [f for f, _ in seen]
    assert all(a <= b for a, b in zip(fr, fr[1:], strict=False))
    assert "2 processes" in {p for _, p in seen} and fr[-1] == 1.0
    assert warmup.kernels_ready()
    assert "counting" not in {p for _, p in seen}  # the list compiled: no workload


def test_a_stale_list_entry_makes_the_workload_run(small, monkeypatch):
    from core import precompile

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(small / "numba"))
    stale = _cheap_entries(1) + [{"kernel": "core.metric:no_such_kernel", "seconds": 0.1,
                                  "sigs": []}]
    monkeypatch.setattr(precompile, "load_manifest", lambda path=None: stale)
    seen = []
    warmup.compile_kernels(lambda st, fr, info=None: seen.append((fr, (info or {})["part"])),
                           workers=2)
    parts = {p for _, p in seen}
    assert "2 processes" in parts and "counting" in parts and seen[-1][0] == 1.0


def test_precompile_once_leaves_a_marker(small, monkeypatch):
    from core import precompile

    cheap = _cheap_entries(1)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(small / "numba"))
    monkeypatch.setattr(precompile, "load_manifest", lambda path=None: cheap)
    assert warmup.precompile_once(workers=2)
    assert not warmup.precompile_once(workers=2)  # done for these sources
