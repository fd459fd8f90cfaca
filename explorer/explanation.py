"""When the window explains the prompt: a widget-free scheduler of explanations.

The policy that :class:`explorer.main_window.MainWindow` follows, apart from
its widgets (the window passes callables for the prompt's text, the method
and the model, and draws what the scheduler hands it):

* A keystroke that finds the explainer idle is explained at once; while an
  explanation is being computed, keystrokes are debounced (a single-shot
  ``QTimer``, :data:`DEBOUNCE_MS`) and only the newest prompt is asked for;
  a result that arrives while a newer prompt waits for the debounce is not
  drawn (counted in ``stale_results``).
* The explanation is computed by :class:`explorer.worker.Explainer` off the
  GUI thread and only the newest result is drawn; a prompt whose token ids
  were explained before reuses that explanation
  (:class:`explorer.worker.ExplainMemo`).
* While typing, a cheaper explanation is asked for (``max_len`` capped,
  narrower beam, fewer SMC particles, no reconstruction above the first
  failed layer, no layer estimate lookups past
  :data:`FAST_MAX_ESTIMATES`); when typing pauses for :data:`FULL_AFTER_MS` the full one
  replaces it, unless the fast one already equals it (greedy, nothing
  capped or left out).
* Every explanation handed to the views has the runners-up of each step's
  hash lookup filled (:func:`core.explain.add_runners_up`) and shares the
  model-wide parts of the model's first explanation
  (:func:`explain_for_views`).
* A new model's first request is followed by a warm-up on the explainer's
  thread (:func:`warm_up`, result dropped), so the first keystroke does not
  load the kernels.
* ``latencies`` holds keystroke -> drawn times for ``noisekey bench gui``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from functools import partial

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from core.explain import Explanation
from explorer.worker import Explainer, ExplainMemo

__all__ = ["ExplanationScheduler", "explain_for_views", "model_only_explanation",
           "DEBOUNCE_MS", "FULL_AFTER_MS"]

DEBOUNCE_MS = 30  # QT-NOTES: 30-80 ms; an explanation costs about as much
# (only keystrokes that arrive while an explanation is computed wait for it)
FULL_AFTER_MS = 300  # typing pause after which the full explanation replaces the fast one
# ``Model.explain`` options while typing (public keyword arguments of ``generate``):
# a capped length, and narrower beams / fewer particles (greedy ignores width)
FAST_MAX_LEN = 16
FAST_WIDTH = {"beam": 2, "smc": 4}
# and layers above the first reconstructed below this accuracy are left out
FAST_LAYERS_STOP_BELOW = 0.5
# and the layers' estimate lookups when there are more (about 60 µs each)
FAST_MAX_ESTIMATES = 64
# training tokens a new model explains, result dropped, to load its kernels (warm_up)
WARM_TOKENS = 8


_EXPLAINER_THREAD = threading.local()
# the model-wide parts of the explanations of a model, as first published (see below)
_MODEL_PARTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explain_for_views(memo: ExplainMemo, prompt: str, **options) -> Explanation:
    """``memo(prompt, **options)`` with the runners-up of every lookup filled.

    Runs on the explainer's thread; a remembered explanation has them already
    (filled in place), so its objects stay the ones drawn.

    Model-wide parts are published once per model: every explanation of a
    model gets the vocabulary list and index statistics of its first one (a
    fresh list and fresh occupancy arrays per call otherwise), so a view
    whose prompt parts did not change sees nothing new.

    The explainer's numba kernels leave a core to the GUI thread (one thread
    on this two-core machine): an explanation's batches are small, and a
    thread pool waiting on a core busy with painting or another process
    cost more than it saved (the fast explanation on a thread, p50 of 60
    prompts in three runs each: 24-27 ms with two threads, 18-23 ms with one).
    """
    from core.explain import add_runners_up

    if not getattr(_EXPLAINER_THREAD, "cores_set", False):
        from explorer.worker import leave_a_core_for_the_gui

        try:
            leave_a_core_for_the_gui()
        except ImportError:  # no numba: nothing to set
            pass
        _EXPLAINER_THREAD.cores_set = True
    ex = memo(prompt, **options)
    model = memo.model
    if ex is not None and not ex.partial:
        try:
            first = _MODEL_PARTS.get(model)
        except TypeError:  # a model that takes no weak reference: nothing shared
            first = ex
        if first is None:
            _MODEL_PARTS[model] = first = ex
        if first is not ex and first.keys is ex.keys:
            if ex.vocab is not first.vocab and ex.vocab == first.vocab:
                ex.vocab = first.vocab
            if ex.index_stats is not first.index_stats:
                ex.index_stats = first.index_stats
    index = getattr(model, "index", None)
    metric = getattr(index, "metric", None)
    if ex is not None and metric is not None:
        add_runners_up(ex, metric)
    return ex


def warm_up(model, options: dict) -> None:
    """Explain the model's first :data:`WARM_TOKENS` training tokens for views, result dropped.

    Run on the explainer's thread behind a new model's first request
    (:meth:`explorer.worker.Explainer.warm`): numba loads a cached kernel on
    its first call in a process, and the first keystroke after a warm
    start paid for all an explanation runs (its explanation 35-55 ms
    against 13-16 ms later).
    """
    text = model.decode(model.counts.stream[:WARM_TOKENS])
    if text.strip():
        explain_for_views(ExplainMemo(model), text, **options)


def model_only_explanation(model, prompt: str) -> Explanation:
    """What the views can draw of ``model`` before any prompt is explained."""
    return Explanation.model_only(
        prompt, model.keys, list(model.vocab.itos), model.counts.bank.prototypes,
        model.index.stats(), getattr(model.config, "op", "mean"))


class ExplanationScheduler(QObject):
    """Decides when the prompt is explained, fast or full, and which result is drawn.

    Parameters
    ----------
    state : explorer.state.ExplorerState
        Holds the settled prompt (:meth:`on_typed` sets it when it settles).
    model, prompt_text, method : callables
        The model in use, the prompt box's current text, the generation method.
    draw : callable ``(explanation, seconds, full)``
        Hands an explanation to the views (called on the GUI thread).
    drawn : callable ``() -> bool``
        Whether the views drew it (the keystroke's latency counts then).
    """

    busy = Signal(bool)  # a request is open
    failed = Signal(str)
    shown = Signal()  # an explanation reached views that exist

    def __init__(self, state, model: Callable, prompt_text: Callable[[], str],
                 method: Callable[[], str], draw: Callable, drawn: Callable[[], bool],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._model, self._prompt_text, self._method = model, prompt_text, method
        self._draw, self._drawn = draw, drawn
        self.explain_seconds = float("nan")
        self.explained_full = False  # the drawn explanation used the full options
        self.key_debounced = False  # the last keystroke waited for the debounce timer
        self.stale_results = 0  # explanations not drawn: the prompt had moved on
        self.latencies: list[float] = []
        self._typed_at: float | None = None
        self._memo: ExplainMemo | None = None  # model.explain by token ids
        self.explainer = Explainer(self)
        self.explainer.ready.connect(self._on_ready)
        self.explainer.failed.connect(self._on_failed)
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(DEBOUNCE_MS)
        self.debounce.timeout.connect(lambda: self.state.set_prompt(self._prompt_text()))
        self.full_timer = QTimer(self)
        self.full_timer.setSingleShot(True)
        self.full_timer.setInterval(FULL_AFTER_MS)
        self.full_timer.timeout.connect(lambda: self.request(full=True))

    def on_typed(self, text: str) -> None:
        """A keystroke: explain it now if nothing is computed or waiting, else debounce."""
        self._typed_at = time.perf_counter()
        self.full_timer.stop()
        self.key_debounced = not (self._model() is not None and not self.debounce.isActive()
                                  and not self.explainer.pending)
        if not self.key_debounced:
            self.state.set_prompt(text)  # leading edge
            return
        self.debounce.start()  # restarts: fires DEBOUNCE_MS after the last keystroke

    def options(self, full: bool) -> dict:
        """Keyword arguments of ``Model.explain``: the user's method, fast or full."""
        method = self._method()
        kw: dict = {"method": method}
        if not full:
            kw["max_len"] = FAST_MAX_LEN
            kw["layers_stop_below"] = FAST_LAYERS_STOP_BELOW
            kw["max_estimates"] = FAST_MAX_ESTIMATES
            if method in FAST_WIDTH:
                kw["width"] = FAST_WIDTH[method]
        return kw

    def _fast_is_full(self, ex) -> bool:
        """The fast explanation equals the full one (greedy, nothing cut or left out)."""
        return "width" not in self.options(False) and \
            len(ex.generation.steps) < FAST_MAX_LEN and \
            not np.isnan(np.asarray(ex.layers.accuracy)).any() and \
            not ex.layers.estimates_skipped

    def request(self, full: bool = True) -> None:
        """Ask the explainer for the settled prompt's explanation (newest request wins)."""
        self.full_timer.stop()
        model = self._model()
        if model is None:
            return
        fresh = self._memo is None or self._memo.model is not model
        if fresh:
            self._memo = ExplainMemo(model)
        self.explainer.request(partial(explain_for_views, self._memo, **self.options(full)),
                               self.state.prompt, full)
        if fresh:
            self.explainer.warm(partial(warm_up, model, self.options(False)))
        self.busy.emit(True)

    def _on_ready(self, ex, secs: float, full: bool = True) -> None:
        if ex is not None and self.debounce.isActive() and ex.prompt != self._prompt_text():
            # typed on while this was computed: the newer prompt is asked for when the
            # debounce fires, and drawing this one now would only delay it
            self.stale_results += 1
            return
        self.explain_seconds = secs
        self.explained_full = full
        self.busy.emit(False)
        self._draw(ex, secs, full)
        if not full and ex is not None and self._fast_is_full(ex):
            self.explained_full = full = True
        if not full and ex is not None and ex.prompt == self._prompt_text():
            self.full_timer.start()  # typing paused: the full explanation follows
        if not self._drawn():
            return
        if self._typed_at is not None:
            self.latencies.append(time.perf_counter() - self._typed_at)
            self._typed_at = None
        self.shown.emit()

    def _on_failed(self, msg: str) -> None:
        self.busy.emit(False)
        self.failed.emit(msg)
