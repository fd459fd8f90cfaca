"""Background work for the window: training, corpus stats, explanations.

Patterns (Orange's ``ConcurrentMixin``, superqt's thread workers):

* :class:`TaskThread` runs one long core call ``fn(progress, cancel)`` in a
  ``QThread``. Progress is throttled (at most every 100 ms, always on a new
  stage and at the end; figures in ``info`` are merged and ride on the next
  report sent, so a chatty trainer cannot flood the GUI thread) and
  delivered by signal to the GUI thread; results and errors are handled on
  the GUI thread only. Every figure report also rides along, in order, as
  ``info["_history"]`` (``[(stage, fraction, figures), ...]``), so a curve
  keeps the points the throttle merged.
* Cancel is polled twice: core functions call ``cancel()`` between chunks,
  and the progress callback itself raises :class:`Cancelled` once cancel was
  requested, so any core function that reports progress stops at its next
  report (core kernels are ``nogil`` and chunked, so within a second).
* :class:`TaskSlot` keeps one task per kind: starting a new one cancels the
  old, whose late results are dropped.
* :class:`Explainer` computes ``model.explain(prompt)`` on its own thread;
  every request carries a sequence number, queued requests older than the
  latest are skipped and stale results dropped.
* :class:`ExplainMemo` is ``model.explain`` keyed by the prompt's token ids:
  a keystroke that leaves the ids alone (a letter of a word the vocabulary
  lacks, a trailing space) reuses the last explanation of those ids with the
  new prompt text, sharing its parts, so the views can tell what changed.
* :func:`collect_garbage_on_gui_thread` turns Python's automatic cyclic
  garbage collector off and runs it from a timer on the GUI thread (the
  design of pyqtgraph's ``GarbageCollector``, re-done here in a few lines
  because importing pyqtgraph for it cost 0.6 s before the window shows).
  Otherwise a collection triggered by an
  allocation on a worker thread can destroy a stale widget's wrapper there;
  its ``~QObject`` then waits for the GIL while the GUI thread, deleting
  another widget, waits for Qt's mutex: a deadlock that was observed while
  the explainer compiled its kernels.
* :func:`load_or_train` first compiles the kernels when this install has
  not yet (:func:`core.warmup.compile_kernels`, a "compiling kernels"
  stage with progress; ``NOISEKEY_NO_WARMUP=1`` skips it, as the tests do),
  then caches trained models in the user cache directory
  under a bounded, cancellable hash of the corpus files (:func:`corpus_hash`),
  the training config, the model-file format version and the model code
  (:func:`core.warmup.source_digest`), so a warm start
  loads instead of training.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal, Slot

from core.corpus import Cancelled

ProgressFn = Callable[[str, float, "dict | None"], None]
CancelFn = Callable[[], bool]

def describe_error(exc: BaseException) -> str:
    """One readable line for an exception raised by a task."""
    if isinstance(exc, MemoryError):
        return "out of memory: try a smaller corpus, dimension or number of prototypes"
    msg = str(exc) or exc.__class__.__name__
    name = exc.__class__.__name__
    if name in ("CorpusError", "ModelFileError", "UserError", "FileNotFoundError",
                "PermissionError", "IsADirectoryError"):
        return msg
    return f"{name}: {msg}"


class _GuiThreadCollector(QObject):
    """The cyclic collector, run by a timer: generation ``g`` is collected when
    its count passes the automatic collector's threshold for ``g``."""

    def __init__(self, interval_ms: int, parent: QObject) -> None:
        super().__init__(parent)
        self.threshold = gc.get_threshold()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)

    def check(self) -> None:
        counts = gc.get_count()
        gen = -1
        for g in range(3):
            if counts[g] <= self.threshold[g]:
                break
            gen = g
        if gen >= 0:
            gc.collect(gen)


def collect_garbage_on_gui_thread(interval: float = 0.5) -> None:
    """Collect reference cycles only on the GUI thread, from a timer (idempotent).

    Called on the GUI thread by every owner of worker threads here, before
    they start. The collector lives as long as the application; it keeps
    the generation thresholds of the automatic one, so memory behaves the
    same.
    """
    app = QCoreApplication.instance()
    if app is None or getattr(app, "_gui_thread_gc", None) is not None:
        return
    app._gui_thread_gc = _GuiThreadCollector(int(interval * 1000), app)


def freeze_long_lived_objects() -> None:
    """Collect once, then move every surviving object out of the collector's sight.

    Called once the first views are drawn: the interpreter, Qt, pyqtgraph,
    numba's dispatchers and the first model are then loaded and live as long
    as the window (~170k objects). A full collection of that heap costs
    ~80 ms on the GUI thread, a stall the timer would repeat now and then;
    after ``gc.freeze()`` collections scan only newer objects. Once per
    application.
    """
    app = QCoreApplication.instance()
    if app is None or getattr(app, "_heap_frozen", False):
        return
    app._heap_frozen = True
    gc.collect()
    gc.freeze()


def leave_a_core_for_the_gui() -> None:
    """Run core's threaded batches on this thread with one core fewer than there are.

    Core's training kernels release the GIL, but batches threaded over
    every core (:func:`core.jit.run_rows`) starve the GUI thread of CPU
    (stalls of up to a second on a two-core machine). ``run_rows`` reads
    ``numba.set_num_threads``, which is per calling thread, so this touches
    only the worker's batches (call it on the worker thread, after
    ``core.model`` has imported numba).
    """
    import numba

    n = min(numba.config.NUMBA_NUM_THREADS, os.cpu_count() or 1)
    numba.set_num_threads(max(1, n - 1))


class TaskThread(QThread):
    """Run ``fn(progress, cancel)`` off the GUI thread.

    Signals
    -------
    progressed(str, float, object)
        stage, fraction in [0, 1], info dict (or None); throttled.
    succeeded(object)
        The return value of ``fn``.
    failed(str)
        A one-line message (the traceback goes to ``self.traceback``).
    cancelled()
    """

    progressed = Signal(str, float, object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, fn: Callable[[ProgressFn, CancelFn], object], name: str = "task",
                 interval: float = 0.1, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.fn = fn
        self.name = name
        self.interval = interval
        self._cancel = threading.Event()
        self._last = 0.0
        self._stage = ""
        self._fraction = 0.0
        self._info: dict = {}
        self._history: list[tuple[str, float, dict]] = []
        self.traceback = ""
        self.started_at = 0.0

    def cancel(self) -> None:
        """Ask the task to stop at its next progress report or cancel poll."""
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def _progress(self, stage: str, fraction: float, info: dict | None = None) -> None:
        if self._cancel.is_set():
            raise Cancelled(stage)
        if info:  # figures wait for the next report sent (newest value per key)
            self._info.update(info)
            self._history.append((stage, float(fraction), dict(info)))
        now = time.perf_counter()
        if stage != self._stage or fraction >= 1.0 or now - self._last >= self.interval:
            self._stage, self._last = stage, now
            self._fraction = float(fraction)
            self.progressed.emit(stage, float(fraction), self._take_info())
        else:
            self._fraction = float(fraction)

    def _take_info(self) -> dict | None:
        pending, self._info = self._info, {}
        if self._history:
            pending["_history"], self._history = self._history, []
        return pending or None

    def _flush(self) -> None:
        """Send figures that arrived after the last report sent."""
        if self._info:
            self.progressed.emit(self._stage, self._fraction, self._take_info())

    def run(self) -> None:  # runs in the worker thread
        self.started_at = time.perf_counter()
        try:
            result = self.fn(self._progress, self._cancel.is_set)
        except Cancelled:
            self.cancelled.emit()
            return
        except BaseException as exc:  # noqa: BLE001 - every error becomes a message
            self.traceback = traceback.format_exc()
            if self._cancel.is_set():
                self.cancelled.emit()
            else:
                self.failed.emit(describe_error(exc))
            return
        if self._cancel.is_set():
            self.cancelled.emit()
        else:
            self._flush()
            self.succeeded.emit(result)


class TaskSlot(QObject):
    """At most one running task of a kind; a new start cancels the old one.

    Signals mirror :class:`TaskThread` but only for the current task.
    """

    progressed = Signal(str, float, object)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    busyChanged = Signal(bool)

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        collect_garbage_on_gui_thread()  # before any of its threads runs Python
        self.name = name
        self.current: TaskThread | None = None
        self._old: list[TaskThread] = []

    @property
    def busy(self) -> bool:
        return self.current is not None

    def start(self, fn: Callable[[ProgressFn, CancelFn], object]) -> TaskThread:
        self.cancel()
        t = TaskThread(fn, self.name, parent=self)
        t.progressed.connect(lambda s, f, i, t=t: self._if_current(t, self.progressed, s, f, i))
        t.succeeded.connect(lambda r, t=t: self._finish(t, self.succeeded, r))
        t.failed.connect(lambda m, t=t: self._finish(t, self.failed, m))
        t.cancelled.connect(lambda t=t: self._finish(t, self.cancelled))
        t.finished.connect(lambda t=t: self._reap(t))
        self.current = t
        t.start()
        self.busyChanged.emit(True)
        return t

    def cancel(self) -> bool:
        """Cancel the current task (its late result is dropped). True if one ran."""
        t = self.current
        if t is None:
            return False
        t.cancel()
        self._old.append(t)
        self.current = None
        self.cancelled.emit()
        self.busyChanged.emit(False)
        return True

    def wait(self, ms: int = 10000) -> None:
        """Block until all threads of this slot stopped (for shutdown and tests)."""
        for t in [*self._old, self.current]:
            if t is not None and t.isRunning():
                t.wait(ms)

    def _if_current(self, t: TaskThread, sig, *args) -> None:
        if t is self.current:
            sig.emit(*args)

    def _finish(self, t: TaskThread, sig, *args) -> None:
        if t is self.current:
            self.current = None
            sig.emit(*args)
            self.busyChanged.emit(False)

    def _reap(self, t: TaskThread) -> None:
        if t in self._old:
            self._old.remove(t)
        t.deleteLater()


# -- explanations -----------------------------------------------------------
class ExplainMemo:
    """``model.explain(prompt, **options)``, remembered by the prompt's token ids.

    Everything an explanation holds but ``prompt`` and ``tokens`` follows
    from the prompt's ids and the options (the generation methods are
    deterministic: SMC draws from the model's seed), so a prompt that
    encodes to ids explained before gets that explanation again with its
    own text and tokens: the parts are the same objects, which the views
    read as "unchanged". The last :attr:`size` keys are kept.

    Called on the explainer's thread only.
    """

    size = 8

    def __init__(self, model: object) -> None:
        from collections import OrderedDict

        self.model = model
        self._memo: OrderedDict[tuple, object] = OrderedDict()
        self.hits = 0

    def __call__(self, prompt: str, **options) -> object:
        import numpy as np

        model = self.model
        ids = np.asarray(model.encode(prompt))  # type: ignore[attr-defined]
        key = (ids.dtype.str, ids.tobytes(), tuple(sorted(options.items())))
        ex = self._memo.get(key)
        if ex is None:
            ex = model.explain(prompt, **options)  # type: ignore[attr-defined]
            self._memo[key] = ex
            while len(self._memo) > self.size:
                self._memo.popitem(last=False)
            return ex
        self._memo.move_to_end(key)
        self.hits += 1
        if ex.prompt == prompt:  # type: ignore[attr-defined]
            return ex
        return dataclasses.replace(
            ex, prompt=prompt,
            tokens=model.tokenizer.split(prompt))  # type: ignore[attr-defined]


class _ExplainWorker(QObject):
    done = Signal(int, object, float, bool)
    failed = Signal(int, str)
    warmed = Signal()

    def __init__(self, latest: list[int]) -> None:
        super().__init__()
        self._latest = latest

    @Slot(int, object, str, bool)
    def compute(self, seq: int, fn: object, prompt: str, full: bool) -> None:
        if seq != self._latest[0]:
            return  # a newer request is queued behind this one
        t0 = time.perf_counter()
        try:
            ex = fn(prompt)  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001
            self.failed.emit(seq, describe_error(exc))
            return
        self.done.emit(seq, ex, time.perf_counter() - t0, full)

    @Slot(int, object)
    def warm(self, seq: int, fn: object) -> None:
        """``fn()`` for its side effects, unless a newer request came since it was queued."""
        try:
            if seq == self._latest[0]:
                fn()  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - the next real request reports its own error
            pass
        finally:
            self.warmed.emit()


class Explainer(QObject):
    """``fn(prompt)`` (a bound ``model.explain``) on a worker thread, newest wins.

    One worker thread (``Model.explain`` is not safe to run twice at once:
    the hash index keeps scratch stamps), requests carry sequence numbers,
    queued ones older than the newest are skipped unrun and stale results
    are dropped, so the GUI thread never waits and draws only the newest.

    Signals
    -------
    ready(object, float, bool)
        The explanation of the latest request, its compute time (s) and
        whether it was a full (not a fast, while-typing) request.
    failed(str)
    """

    ready = Signal(object, float, bool)
    failed = Signal(str)
    _request = Signal(int, object, str, bool)
    _warm = Signal(int, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        collect_garbage_on_gui_thread()  # before its thread runs Python
        self._latest = [0]
        self._answered = 0
        self.thread = QThread(self)
        self.thread.setObjectName("explainer")
        self.worker = _ExplainWorker(self._latest)
        self.worker.moveToThread(self.thread)
        self._request.connect(self.worker.compute)
        self._warm.connect(self.worker.warm)
        self.warming = 0  # warm-up jobs queued and not yet finished (:meth:`warm`)
        self.worker.warmed.connect(self._warmed)
        self.worker.done.connect(self._done)
        self.worker.failed.connect(self._failed)
        self.thread.start()

    def request(self, fn: Callable[[str], object], prompt: str, full: bool = True) -> int:
        """Queue ``fn(prompt)``; returns the request's sequence number."""
        self._latest[0] += 1
        seq = self._latest[0]
        self._request.emit(seq, fn, prompt, full)
        return seq

    def warm(self, fn: Callable[[], object]) -> None:
        """Queue ``fn()`` behind the requests queued now, its result dropped.

        For work that readies the thread for the next request (kernels
        loaded); skipped if a request is made before it runs, and never
        counted in :attr:`pending`.
        """
        self.warming += 1
        self._warm.emit(self._latest[0], fn)

    def _warmed(self) -> None:
        self.warming -= 1

    @property
    def pending(self) -> bool:
        """A request whose result has not arrived yet."""
        return self._answered != self._latest[0]

    def _done(self, seq: int, ex: object, secs: float, full: bool) -> None:
        if seq == self._latest[0]:
            self._answered = seq
            self.ready.emit(ex, secs, full)

    def _failed(self, seq: int, msg: str) -> None:
        if seq == self._latest[0]:
            self._answered = seq
            self.failed.emit(msg)

    def stop(self) -> None:
        self._latest[0] += 1
        self.thread.quit()
        self.thread.wait(10000)


# -- model cache --------------------------------------------------------------
#: What :func:`corpus_hash` reads of a file: its first and last MiB and
#: HASH_SAMPLES blocks of HASH_BLOCK bytes spread evenly between them.
HASH_EDGE = 1 << 20
HASH_SAMPLES = 64
HASH_BLOCK = 64 << 10


def corpus_hash(paths: Sequence[str | os.PathLike], cancel: CancelFn | None = None) -> str:
    """Cache key of a corpus: bounded cost, cancellable.

    BLAKE2b over every corpus file (as :func:`core.files.find_files` lists
    them: a FIFO, socket or device is refused from its ``stat``, never
    opened): its name, size and modification time (ns), and its bytes when
    it holds at most ``2 * HASH_EDGE + HASH_SAMPLES * HASH_BLOCK`` (6 MiB);
    past that its first and last MiB and ``HASH_SAMPLES`` evenly spaced
    blocks, so a 10 GB corpus costs the same 6 MiB of reading as a 6 MiB one.
    An edit that keeps the size and the modification time and misses every
    sampled block would go unseen; saving a file changes its modification
    time. ``cancel()`` is polled before every read (:class:`Cancelled`).
    """
    from core.files import find_files, open_regular

    def check() -> None:
        if cancel is not None and cancel():
            raise Cancelled("cancelled while hashing the corpus")

    h = hashlib.blake2b(digest_size=16)
    for f in find_files(paths):
        check()
        with open_regular(f) as fh:
            st = os.fstat(fh.fileno())
            size = st.st_size
            h.update(f"{f.name}\0{size}\0{st.st_mtime_ns}\0".encode())
            if size <= 2 * HASH_EDGE + HASH_SAMPLES * HASH_BLOCK:
                spans = [(off, HASH_EDGE) for off in range(0, size, HASH_EDGE)]
            else:
                step = (size - 2 * HASH_EDGE - HASH_BLOCK) / (HASH_SAMPLES - 1)
                spans = [(0, HASH_EDGE)]
                spans += [(HASH_EDGE + int(i * step), HASH_BLOCK) for i in range(HASH_SAMPLES)]
                spans.append((size - HASH_EDGE, HASH_EDGE))
            for off, n in spans:
                check()
                fh.seek(off)
                h.update(fh.read(n))
    return h.hexdigest()


def config_dict(config: object) -> dict:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)  # type: ignore[arg-type]
    return dict(vars(config))


def cache_dir() -> Path:
    """``<user cache>/noisekey/models`` (``NOISEKEY_CACHE_DIR`` overrides)."""
    env = os.environ.get("NOISEKEY_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("noisekey")) / "models"


def model_cache_path(paths: Sequence[str | os.PathLike], config: object,
                     cancel: CancelFn | None = None) -> Path:
    """Cache file for a model of ``paths`` trained with ``config`` (``cancel``: see
    :func:`corpus_hash`)."""
    from core.modelfile import FORMAT_VERSION
    from core.warmup import source_digest

    cfg = json.dumps(config_dict(config), sort_keys=True, default=str)
    h = hashlib.blake2b(digest_size=12)
    h.update(corpus_hash(paths, cancel).encode())
    h.update(cfg.encode())
    h.update(str(FORMAT_VERSION).encode())
    h.update(source_digest().encode())  # a new release trains anew: its model may differ
    return cache_dir() / f"{h.hexdigest()}.nkm"


def make_config(cls: type, config: object) -> object:
    """``cls(**config)`` for a dict of settings (keys ``cls`` lacks are left out)."""
    if not isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})
    return cls(**config)


#: Cache writes started by :func:`load_or_train` with ``write_later`` (joined by the next call).
_cache_writes: list[threading.Thread] = []
_cache_writes_lock = threading.Lock()


def wait_for_cache_writes(timeout: float | None = None) -> None:
    """Wait for the model cache writes that :func:`load_or_train` left running."""
    with _cache_writes_lock:
        pending = list(_cache_writes)
        _cache_writes.clear()
    for t in pending:
        t.join(timeout)


def _write_cache(model, path: Path) -> None:
    """Save ``model`` to the cache ``path``; a read-only or odd cache is skipped silently."""
    from core.modelfile import ModelFileError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    except (OSError, ModelFileError):
        pass  # a read-only or odd cache must not fail training


def _model_code(progress: ProgressFn | None, cancel: CancelFn | None, all_cores: bool):
    """``core.model``, imported on this (worker) thread, its kernels compiled on a fresh install.

    The first stage of :func:`load_or_train` and :func:`open_model`: the
    numba kernels load off the GUI thread, and a fresh install compiles them
    here, as a stage with progress.
    """
    if progress:
        progress("loading the model code", 0.0, None)
    from core import model as core_model

    if not all_cores:
        leave_a_core_for_the_gui()
    if os.environ.get("NOISEKEY_NO_WARMUP") != "1":
        from core.warmup import compile_kernels

        compile_kernels(progress, cancel)
    return core_model


def load_or_train(paths: Sequence[str | os.PathLike], config: object,
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                  use_cache: bool = True, write_later: bool = False, all_cores: bool = False):
    """A model for ``paths`` + ``config``: from the cache when it matches, else trained.

    ``config`` is a ``TrainConfig`` or a dict of its fields (the window passes
    a dict, so that ``core.model`` and its kernels load on this worker thread).

    A cached file that fails to load (stale, damaged or crafted: every model
    file is checked before any kernel sees it, see
    :meth:`core.model.Model.load`) is evicted and the model retrained, so a
    bad file costs one retraining, not every start. Anything other than a
    regular file at the cache path (a folder, a link, a FIFO) is left alone
    and the cache is skipped for this model.

    ``all_cores``: core's threaded batches use every core instead of
    leaving one to the GUI thread (:func:`leave_a_core_for_the_gui`); the
    window asks for it while it has no model yet, so nothing is drawn and
    the first start trains sooner.

    ``write_later``: a trained model is returned at once and written to the
    cache by a thread of its own (not a daemon: an exit waits for the
    atomic write), so the window draws it 0.3 s earlier on a first start
    (the write of the bundled corpus's model); the next call waits for it.

    Returns
    -------
    (model, from_cache) : (core.model.Model, bool)
    """
    wait_for_cache_writes()  # the file a previous call is writing may be this one
    core_model = _model_code(progress, cancel, all_cores)
    config = make_config(core_model.TrainConfig, config)
    path = model_cache_path(paths, config, cancel) if use_cache else None
    if path is not None and (path.is_symlink() or (path.exists() and not path.is_file())):
        path = None  # not ours to replace: train without the cache
    if path is not None and path.exists():
        if progress:
            progress("loading cached model", 0.0, None)
        try:
            m = core_model.Model.load(path)
            if progress:
                progress("loading cached model", 1.0, None)
            return m, True
        except Exception:  # noqa: BLE001 - a stale or broken cache file: evict, retrain
            try:
                path.unlink(missing_ok=True)
            except OSError:
                path = None  # cannot evict: train without the cache
    m = core_model.train([str(p) for p in paths], config, progress=progress, cancel=cancel)
    if path is not None and write_later:
        # daemon=False said outright: a thread inherits its creator's flag, and the
        # window's worker is a QThread, which Python sees as a daemon: its writes
        # were cut off when the window closed within a second of training
        t = threading.Thread(target=_write_cache, args=(m, path), name="noisekey-cache-write",
                             daemon=False)
        with _cache_writes_lock:
            _cache_writes.append(t)
        t.start()
    elif path is not None:
        _write_cache(m, path)
    return m, False


def open_model(path: str | os.PathLike, progress: ProgressFn | None = None,
               cancel: CancelFn | None = None, all_cores: bool = False):
    """Read a model file (``noisekey train --out``) for the window, on a worker thread.

    As :func:`load_or_train` starts: the model code is imported and, on a
    fresh install, the kernels compiled as their own stage; then the file is
    read and checked (:meth:`core.model.Model.load`: a damaged or crafted
    file raises :class:`core.modelfile.ModelFileError`, one line naming the
    file and what is wrong). A cancel during the read takes effect when it
    ends (seconds for a large model).
    """
    core_model = _model_code(progress, cancel, all_cores)
    if progress:
        progress("loading the model file", 0.0, None)
    m = core_model.Model.load(path)
    if cancel is not None and cancel():
        raise Cancelled("cancelled while loading the model file")
    if progress:
        progress("loading the model file", 1.0, None)
    return m
