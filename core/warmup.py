"""Numba compilation as a stage of its own, with progress.

Every kernel of :mod:`core` is compiled on its first call and cached on disk
(``cache=True``). On a fresh install that first call is most of a first
start: about 50 s of compilation against 3 s of training on the bundled
corpus (2 cores), and without this module it happened silently inside the
stages ("gate - 0%" for most of a minute).

:func:`compile_kernels` trains a model on the first lines of the bundled
corpus (enough rows that the threaded variants of the batch kernels run,
see :mod:`core.jit`), generates with every method and builds one
explanation, reporting ``progress("compiling kernels", fraction, info)``
from the stages of that run. Whether the kernels are already compiled is
read from a marker file (:func:`marker_path`) keyed by numba's version, the
CPU, the cache folder and the core sources (:func:`source_digest`), so a
warm start skips the warm-up entirely; an edited kernel makes the marker
stale and the warm-up runs once more.

Compilation holds the GIL, so one process compiles on one core. With more
cores the kernels recorded in :mod:`core.precompile`'s list are first
compiled by one process per core into numba's cache. The workload
(:func:`run_workload`) then runs only if a worker could not compile an
entry (a stale list): the list was recorded from that workload, so after a
complete list it only loaded the kernels the first training loads anyway,
1.2-1.6 s of a first start (two alternated runs each, 2-core machine).
A kernel the list lacks compiles on its first call, as without the list.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.config import COMPILE_STAGE
from core.kernel_cache import source_digest

__all__ = ["compile_kernels", "kernels_ready", "marker_path", "precompile_once",
           "source_digest"]

ProgressFn = Callable[[str, float, "dict | None"], None]
CancelFn = Callable[[], bool]

#: Lines of the bundled corpus the warm-up trains on: about 3,000 tokens,
#: so the gate's batches pass :func:`core.jit.batched`'s threshold.
WARMUP_LINES = 400
STAGE = COMPILE_STAGE


def _fingerprint() -> str:
    import numba

    h = hashlib.blake2b(digest_size=12)
    h.update(numba.__version__.encode())
    h.update(platform.machine().encode())
    h.update(platform.processor().encode())
    h.update(str(os.environ.get("NUMBA_CACHE_DIR", "")).encode())
    h.update(str(numba.config.NUMBA_NUM_THREADS).encode())
    h.update(source_digest().encode())
    return h.hexdigest()


def marker_path() -> Path:
    """The file whose presence says this install's kernels are compiled."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("noisekey")) / "kernels" / f"{_fingerprint()}.ok"


def kernels_ready() -> bool:
    """Whether :func:`compile_kernels` has run for the current sources and numba."""
    try:
        return marker_path().is_file()
    except OSError:
        return False


def _warmup_corpus(folder: Path) -> Path:
    from core.corpus import default_corpus_path

    with open(default_corpus_path(), encoding="utf-8") as fh:
        lines = [ln for _, ln in zip(range(WARMUP_LINES), fh, strict=False)]
    out = folder / "warmup.txt"
    out.write_text("".join(lines), encoding="utf-8")
    return out


def run_workload(progress: Callable[[str, float], None] | None = None,
                 cancel: CancelFn | None = None) -> None:
    """Train on the first lines of the bundled corpus, generate, explain.

    Every kernel a first start needs is called once, with the argument types
    a real run gives it. ``progress(part, fraction)`` reports the fraction of
    the workload done: the training stages fill the first 80%, the four
    decoding methods the rest.
    """
    from core.config import TrainConfig
    from core.model import train

    order = ["counting", "prototypes", "index", "windows", "gate", "memory", "signatures"]

    def inner(stage: str, frac: float, info=None) -> None:
        if progress is None or stage not in order:
            return
        progress(stage, 0.8 * (order.index(stage) + min(max(frac, 0.0), 1.0)) / len(order))

    with tempfile.TemporaryDirectory(prefix="noisekey-warmup-") as tmp:
        model = train([str(_warmup_corpus(Path(tmp)))], TrainConfig(), progress=inner,
                      cancel=cancel)
    for i, method in enumerate(("greedy", "beam", "smc", "speculative")):
        if cancel is not None and cancel():
            from core.corpus import Cancelled

            raise Cancelled("cancelled while compiling kernels")
        model.generate("the", method=method, max_len=6)
        if progress:
            progress(method, 0.8 + 0.05 * (i + 1))
    model.explain("the function")
    # the window's fast explanation while typing (explorer.explanation.options)
    model.explain("the function returns a new list of", method="greedy", max_len=16,
                  layers_stop_below=0.5, max_estimates=64)
    model.similar("the function")


def _workers() -> int:
    """Compiling processes: one per core, at most 8; 1 means compile here."""
    return max(1, min(os.cpu_count() or 1, 8))


def compile_kernels(progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                    force: bool = False, workers: int | None = None) -> float:
    """Compile (or load from numba's cache) the kernels of training and generation.

    With more than one core the recorded kernels are first compiled by one
    process per core (:func:`core.precompile.compile_parallel`, the first
    95% of the bar); the workload (:func:`run_workload`) runs only when a
    worker failed at an entry, and compiles it here.

    Parameters
    ----------
    progress : callable, optional
        ``progress("compiling kernels", fraction, {"part": what})``.
    cancel : callable, optional
        Polled while the workers compile and between and inside the
        warm-up's training stages; raises :class:`core.corpus.Cancelled`.
    force : bool
        Run even if :func:`kernels_ready` says the kernels are compiled.
    workers : int, optional
        Compiling processes (default: one per core, at most 8; 1: none).

    Returns
    -------
    float
        Seconds spent (0.0 when the marker said there was nothing to do).
    """
    if not force and kernels_ready():
        return 0.0
    from core.precompile import compile_parallel, load_manifest

    t0 = time.perf_counter()
    workers = _workers() if workers is None else workers
    if progress:
        progress(STAGE, 0.0, {"part": "loading"})
    lo, complete = 0.0, False
    if workers > 1:
        lo = 0.95
        entries = load_manifest()

        def par(frac: float) -> None:
            if progress:
                progress(STAGE, lo * frac, {"part": f"{workers} processes"})

        try:
            complete = bool(entries) and compile_parallel(workers, par, cancel,
                                                          entries) == len(entries)
        except OSError:
            pass  # no process could start: the workload below compiles everything here

    def inner(part: str, frac: float) -> None:
        if progress:
            progress(STAGE, lo + (1.0 - lo) * 0.99 * frac, {"part": part})

    if not complete:
        run_workload(inner, cancel)
    if progress:
        progress(STAGE, 1.0, {"part": "done"})
    try:
        m = marker_path()
        m.parent.mkdir(parents=True, exist_ok=True)
        m.touch()
    except OSError:
        pass  # no cache folder: the warm-up runs again next time, nothing is lost
    return time.perf_counter() - t0


def precompile_once(workers: int | None = None, extra: Path | None = None) -> bool:
    """Compile the recorded kernels in parallel unless done for these sources.

    For a test run or a script about to call many kernels: it fills numba's
    cache from one process per core (:func:`core.precompile.compile_parallel`)
    and leaves a marker beside :func:`marker_path`'s, so the next run with
    the same sources does nothing. ``extra``: a further signature list
    (the test suite's, ``tests/kernel_signatures.json``) compiled with the
    warm-up's. Returns whether it compiled.
    """
    from core.precompile import compile_parallel, load_manifest, merge_entries

    workers = _workers() if workers is None else workers
    try:
        mark = marker_path().with_suffix(".pre")
        if mark.is_file() or workers < 2:
            return False
    except OSError:
        return False
    entries = merge_entries(load_manifest(), load_manifest(extra) if extra else [])
    try:
        compile_parallel(workers, entries=entries)
    except OSError:  # no process could start: kernels compile on first call instead
        return False
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    except OSError:
        pass
    return True
