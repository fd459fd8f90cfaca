"""One observable state shared by every view of the window.

Following glue's viewer state, the linked views never talk to each other:
each one subscribes to :class:`ExplorerState` signals and writes back through
its setters, so linked selection is a property of the state and can be tested
without any widget.

Design choices (the spec is silent):

* The selected token is a *vocabulary id* (``-1`` for none). Every view
  highlights all occurrences of it. Selecting a token that the current
  generation emitted also moves ``step`` to its first occurrence, so that
  the bucket view shows the hash lookup that produced it.
* ``step`` indexes the generated steps of the current explanation; ``layer``
  indexes the prompt's hierarchy L0..Ln.
* Setters emit only on change, so a view writing back the value it was told
  cannot start a signal loop.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from core.explain import Explanation

PROJECTIONS = ("pca", "random")


class ExplorerState(QObject):
    """Prompt, selection, step, layer, projection, model and explanation.

    Signals
    -------
    promptChanged(str)
    tokenSelected(int)
        Vocabulary id, -1 for none.
    stepChanged(int)
    layerChanged(int)
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
    projectionChanged = Signal(str)
    modelChanged = Signal(object)
    explanationChanged = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._prompt = ""
        self._token = -1
        self._step = 0
        self._layer = 0
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
    def step(self) -> int:
        return self._step

    @property
    def layer(self) -> int:
        return self._layer

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

    def select_token(self, token_id: int) -> None:
        """Select a vocabulary id everywhere; move ``step`` to it if generated."""
        token_id = int(token_id)
        if token_id != self._token:
            self._token = token_id
            self.tokenSelected.emit(token_id)
        ex = self._explanation
        if ex is not None and token_id >= 0:
            ids = [s.token for s in ex.generation.steps]
            if token_id in ids and (self._step >= len(ids) or ids[self._step] != token_id):
                self.set_step(ids.index(token_id))

    def set_step(self, step: int) -> None:
        step = max(0, int(step))
        if step != self._step:
            self._step = step
            self.stepChanged.emit(step)

    def set_layer(self, layer: int) -> None:
        layer = max(0, int(layer))
        if layer != self._layer:
            self._layer = layer
            self.layerChanged.emit(layer)

    def set_projection(self, name: str) -> None:
        if name not in PROJECTIONS:
            raise ValueError(f"unknown projection {name!r}; choose from {PROJECTIONS}")
        if name != self._projection:
            self._projection = name
            self.projectionChanged.emit(name)

    def set_model(self, model: object | None) -> None:
        self._model = model
        self.modelChanged.emit(model)

    def set_explanation(self, ex: Explanation | None) -> None:
        """Install a new explanation; clamp step and layer to its sizes."""
        self._explanation = ex
        if ex is not None:
            n_steps = len(ex.generation.steps)
            if self._step >= max(n_steps, 1):
                self._step = max(n_steps - 1, 0)
                self.stepChanged.emit(self._step)
            n_layers = len(ex.layers.layers)
            if self._layer >= max(n_layers, 1):
                self._layer = max(n_layers - 1, 0)
                self.layerChanged.emit(self._layer)
        self.explanationChanged.emit(ex)
