"""One observable state shared by every view of the window.

Following glue's viewer state, the linked views never talk to each other:
each one subscribes to :class:`ExplorerState` signals and writes back through
its setters, so linked selection is a property of the state and can be tested
without any widget.

Design choices (the spec is silent):

* One selection: a token, held by its *string* and published as its
  vocabulary id in the explanation drawn now (``-1`` for none). Every view
  highlights all occurrences of it. A new explanation maps the string
  through its vocabulary, so after a model change the selection lands on
  the same token (a new id), or is cleared when the new vocabulary lacks
  it: never on whatever token the old id names in the new model.
* Selection and step move together: selecting a token that the current
  generation emitted moves ``step`` to its first occurrence (the bucket view
  shows the lookup that produced it); choosing a step (the trajectory's
  slider or a click on a step) selects that step's token, so the ring moves
  in every view.
* ``step`` indexes the generated steps of the current explanation; ``layer``
  indexes the prompt's hierarchy L0..Ln.
* ``lookup`` says which hash lookup the bucket view shows: ``"step"``, the
  snap of the generated ``step``, or ``"layer"``, the lookup of ``layer``'s
  least-squares estimate of the selected prompt token. Pointing at a layer
  (the Layers view) asks for ``"layer"``, pointing at a step (the
  trajectory) for ``"step"``; the View menu sets it directly.
* Setters emit only on change, so a view writing back the value it was told
  cannot start a signal loop.
"""

from __future__ import annotations

import weakref

from PySide6.QtCore import QObject, Signal

from core.explain import Explanation

PROJECTIONS = ("pca", "random")
LOOKUPS = ("step", "layer")


class ExplorerState(QObject):
    """Prompt, selection, step, layer, projection, model and explanation.

    Signals
    -------
    promptChanged(str)
    tokenSelected(int)
        Vocabulary id, -1 for none.
    stepChanged(int)
    layerChanged(int)
    lookupChanged(str)
        ``"step"`` or ``"layer"``: the hash lookup the bucket view shows.
    projectionChanged(str)
    modelChanged(object)
        The model now in use (the last good one).
    explanationChanged(object)
        A new :class:`core.explain.Explanation` (or ``None``).
    """

    promptChanged = Signal(str)
    tokenSelected = Signal(int)
    stepChanged = Signal(int)
    layerChanged = Signal(int)
    lookupChanged = Signal(str)
    projectionChanged = Signal(str)
    modelChanged = Signal(object)
    explanationChanged = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._prompt = ""
        self._token = -1
        self._token_text: str | None = None  # the selection's key
        self._step = 0
        self._layer = 0
        self._lookup = "step"
        self._projection = "pca"
        self._model: object | None = None
        self._explanation: Explanation | None = None

    # -- properties -------------------------------------------------------
    @property
    def prompt(self) -> str:
        return self._prompt

    @property
    def token(self) -> int:
        return self._token

    @property
    def token_text(self) -> str | None:
        """The selected token's string (None for no selection)."""
        return self._token_text

    @property
    def step(self) -> int:
        return self._step

    @property
    def layer(self) -> int:
        return self._layer

    @property
    def lookup(self) -> str:
        return self._lookup

    @property
    def projection(self) -> str:
        return self._projection

    @property
    def model(self) -> object | None:
        return self._model

    @property
    def explanation(self) -> Explanation | None:
        return self._explanation

    # -- setters ----------------------------------------------------------
    def set_prompt(self, text: str) -> None:
        if text != self._prompt:
            self._prompt = text
            self.promptChanged.emit(text)

    def select_token(self, token_id: int, step: int | None = None) -> None:
        """Select a vocabulary id (of the explanation drawn now) everywhere.

        ``step``: the generated step the selection came from (a click on a
        step); otherwise ``step`` moves to the token's first occurrence when
        the generation emitted it.
        """
        token_id = int(token_id)
        ex = self._explanation
        text = None
        if token_id < 0:
            token_id = -1
        elif ex is not None and token_id < len(ex.vocab):
            text = ex.vocab[token_id]
        if step is None and ex is not None and token_id >= 0:
            ids = [s.token for s in ex.generation.steps]
            if token_id in ids and (self._step >= len(ids) or ids[self._step] != token_id):
                step = ids.index(token_id)
        self._apply(token_id, text, step)

    def clear_selection(self) -> None:
        self._apply(-1, None, None)

    def set_step(self, step: int) -> None:
        """Choose a generated step; its token becomes the selection."""
        step = max(0, int(step))
        ex = self._explanation
        steps = ex.generation.steps if ex is not None else []
        if step < len(steps):
            tok = int(steps[step].token)
            self._apply(tok, ex.vocab[tok] if 0 <= tok < len(ex.vocab) else None, step)
        else:
            self._apply(self._token, self._token_text, step)

    def _apply(self, token_id: int, text: str | None, step: int | None) -> None:
        """Update selection and step, then emit what changed (token first)."""
        token_changed = token_id != self._token
        self._token, self._token_text = token_id, text
        step_changed = step is not None and max(0, int(step)) != self._step
        if step_changed:
            self._step = max(0, int(step))
        if token_changed:
            self.tokenSelected.emit(token_id)
        if step_changed:
            self.stepChanged.emit(self._step)

    def set_layer(self, layer: int) -> None:
        layer = max(0, int(layer))
        if layer != self._layer:
            self._layer = layer
            self.layerChanged.emit(layer)

    def set_lookup(self, name: str) -> None:
        self._choose("lookup", name, LOOKUPS, self.lookupChanged)

    def set_projection(self, name: str) -> None:
        self._choose("projection", name, PROJECTIONS, self.projectionChanged)

    def _choose(self, what: str, name: str, choices: tuple[str, ...], signal) -> None:
        """Set the named choice ``what`` (one of ``choices``); emit ``signal`` on change."""
        if name not in choices:
            raise ValueError(f"unknown {what} {name!r}; choose from {choices}")
        if name != getattr(self, f"_{what}"):
            setattr(self, f"_{what}", name)
            signal.emit(name)

    def set_model(self, model: object | None) -> None:
        self._model = model
        self.modelChanged.emit(model)

    def set_explanation(self, ex: Explanation | None) -> None:
        """Install a new explanation; clamp step and layer to its sizes and map
        the selection through its vocabulary (by token string)."""
        self._explanation = ex
        old_token, old_step, old_layer = self._token, self._step, self._layer
        if ex is not None:
            if self._token_text is None and 0 <= self._token < len(ex.vocab):
                self._token_text = ex.vocab[self._token]  # selected before any vocabulary
            if self._token_text is not None:
                vocab = ex.vocab
                if 0 <= self._token < len(vocab) and vocab[self._token] == self._token_text:
                    pass  # same vocabulary (typing): nothing to look up
                else:
                    try:
                        self._token = vocab.index(self._token_text)
                    except ValueError:
                        self._token, self._token_text = -1, None
            ids = [s.token for s in ex.generation.steps]
            n_steps = len(ids)
            if self._token >= 0 and self._token in ids and (
                    self._step >= n_steps or ids[self._step] != self._token):
                self._step = ids.index(self._token)
            if self._step >= max(n_steps, 1):
                self._step = max(n_steps - 1, 0)
            n_layers = len(ex.layers.layers)
            if self._layer >= max(n_layers, 1):
                self._layer = max(n_layers - 1, 0)
        self.explanationChanged.emit(ex)  # views draw with the updated values
        if self._token != old_token:
            self.tokenSelected.emit(self._token)
        if self._step != old_step:
            self.stepChanged.emit(self._step)
        if self._layer != old_layer:
            self.layerChanged.emit(self._layer)


def weak_method(method, default=None):
    """A function that calls the bound ``method`` while its object lives, else gives ``default``.

    For callbacks stored inside Qt objects (a scatter item's ``tip``, the
    explanation scheduler's getters): a bound method there keeps its widget
    alive from inside one of the widget's own items, a reference cycle whose
    collection can delete the widget, and the scene holding the item, from
    inside that item's destructor (see :class:`explorer.view_base.EventImageItem`).
    """
    owner = weakref.ref(method.__self__)  # a Python method or a bound Qt (builtin) one
    name = method.__name__

    def call(*args, **kwargs):
        obj = owner()
        return default if obj is None else getattr(obj, name)(*args, **kwargs)

    call.__name__ = getattr(method, "__name__", "weak_method")
    return call
