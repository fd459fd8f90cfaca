"""The prompt as a strip of clickable token chips, above the views.

Each chip is one prompt token as the tokenizer split it; a click selects
that token in every view (through :class:`explorer.state.ExplorerState`),
and the chips of the selected token are outlined. A token the vocabulary
lacks (or rarer than the min count) is read by the model as ``<unk>``: its
chip is drawn in a warning colour, its tooltip says so, and the strip counts
them at its right end.

Design choices: the strip has a fixed height and scrolls sideways, so a
longer prompt never re-lays out the views below it; it shows the end of a
prompt that overflows it (the tokens being typed, which the model reads
last), and once the reader scrolls away from the end it stays there until
the prompt changes; chips are a pool of
buttons reused between prompts (shown, hidden, relabelled), and a prompt
longer than :data:`MAX_CHIPS` shows its last tokens after a "… N earlier"
note.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QWidget,
)

from explorer.state import ExplorerState

MAX_CHIPS = 128
STRIP_HEIGHT = 30
SELECT_COLOUR = "#e377c2"
CHIP_STYLE = ("QToolButton {{ border: {bw}px solid {border}; border-radius: 4px; padding: 1px 5px;"
              " background: {bg}; color: {fg}; }}")
NORMAL = {"border": "#9aa7b5", "bg": "palette(base)", "fg": "palette(text)"}
UNKNOWN = {"border": "#d08a00", "bg": "#fff3cd", "fg": "#7a4b00"}


def chip_style(unknown: bool, selected: bool) -> str:
    c = dict(UNKNOWN if unknown else NORMAL)
    bw = 1
    if selected:
        c["border"], bw = SELECT_COLOUR, 2
    return CHIP_STYLE.format(bw=bw, **c)


class PromptChips(QScrollArea):
    """Clickable chips of the prompt's tokens (``<unk>`` flagged)."""

    def __init__(self, state: ExplorerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setObjectName("prompt_chips")
        self.setFixedHeight(STRIP_HEIGHT + 8)
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        inner = QWidget()
        self.row = QHBoxLayout(inner)
        self.row.setContentsMargins(0, 2, 0, 2)
        self.row.setSpacing(3)
        self.earlier = QLabel("")
        self.earlier.setEnabled(False)
        self.row.addWidget(self.earlier)
        self.row.addStretch(1)
        self.unknown_label = QLabel("")
        self.unknown_label.setStyleSheet(f"color: {UNKNOWN['fg']};")
        self.row.addWidget(self.unknown_label)
        self.setWidget(inner)
        self.chips: list[QToolButton] = []
        self.chip_ids: list[int] = []  # vocabulary id of each shown chip
        self.chip_unknown: list[bool] = []
        self._selected: set[int] = set()
        self._looks: list[tuple | None] = []  # text, tooltip and style set on each chip
        state.explanationChanged.connect(self.set_explanation)
        state.tokenSelected.connect(self._on_token)
        self._follow_end = True  # keep the strip scrolled to the prompt's last tokens
        self._prompt_ids = b""
        bar = self.horizontalScrollBar()
        bar.rangeChanged.connect(self._keep_end)  # the range grows after the chips' layout
        bar.actionTriggered.connect(lambda _: self._scrolled_by_reader())

    def _keep_end(self, *_args) -> None:
        if self._follow_end:
            bar = self.horizontalScrollBar()
            bar.setValue(bar.maximum())

    def _scrolled_by_reader(self) -> None:
        bar = self.horizontalScrollBar()
        # actionTriggered comes before the move: read the position once it is applied
        QTimer.singleShot(0, lambda: setattr(self, "_follow_end",
                                             bar.value() >= bar.maximum()))

    def _chip(self, i: int) -> QToolButton:
        while len(self.chips) <= i:
            b = QToolButton()
            n = len(self.chips)
            b.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
            b.setCursor(Qt.CursorShape.PointingHandCursor)
            b.clicked.connect(lambda _=False, k=n: self._clicked(k))
            self.row.insertWidget(1 + n, b)
            self.chips.append(b)
            self._looks.append(None)
        return self.chips[i]

    def _clicked(self, k: int) -> None:
        if k < len(self.chip_ids):
            self.state.select_token(self.chip_ids[k])

    def set_explanation(self, ex) -> None:
        """Show the chips of ``ex``'s prompt (none while only the model is drawn)."""
        if ex is None or ex.partial:
            ids, tokens, vocab = np.zeros(0, np.int64), [], []
        else:
            ids = np.asarray(ex.ids, np.int64)
            vocab = ex.vocab
            tokens = list(ex.tokens) if len(ex.tokens) == len(ids) else \
                [vocab[int(i)] for i in ids]
        try:
            unk = vocab.index("<unk>")
        except ValueError:
            unk = -1
        key = ids.tobytes()
        if key != self._prompt_ids:  # a new prompt: show its end again
            self._prompt_ids = key
            self._follow_end = True
        start = max(0, len(ids) - MAX_CHIPS)
        self.earlier.setText(f"… {start} earlier" if start else "")
        self.earlier.setVisible(bool(start))
        self.chip_ids, self.chip_unknown = [], []
        sel = self.state.token
        for k, i in enumerate(range(start, len(ids))):
            b = self._chip(k)
            tid, text = int(ids[i]), tokens[i]
            unknown = tid == unk
            if unknown:
                tip = (f"{text!r} is not in the vocabulary (or rarer than the min count): "
                       f"the model reads it as <unk> (id {tid}). Click to select <unk>.")
            else:
                tip = (f"{text!r} — token {i} of the prompt, id {tid}. "
                       "Click to select it in every view.")
            look = (text.replace("&", "&&"), tip, chip_style(unknown, tid == sel))
            if self._looks[k] != look:  # a new style sheet re-polishes the chip
                b.setText(look[0])
                b.setToolTip(look[1])
                b.setStyleSheet(look[2])
                self._looks[k] = look
            b.show()
            self.chip_ids.append(tid)
            self.chip_unknown.append(unknown)
        for b in self.chips[len(self.chip_ids):]:
            b.hide()
        self._selected = {k for k, t in enumerate(self.chip_ids) if t == sel}
        n_unk = int(np.sum(ids == unk)) if unk >= 0 else 0
        self.unknown_label.setText(
            f"⚠ {n_unk} of {len(ids)} tokens unknown (<unk>)" if n_unk else "")
        self.unknown_label.setToolTip(
            "Words the vocabulary lacks are all read as the one token <unk>: the model "
            "cannot tell them apart." if n_unk else "")
        self._keep_end()

    def _on_token(self, token_id: int) -> None:
        now = {k for k, t in enumerate(self.chip_ids) if t == token_id}
        for k in now ^ self._selected:
            self.chips[k].setStyleSheet(chip_style(self.chip_unknown[k], k in now))
            self._looks[k] = None
        self._selected = now

    def summary(self) -> dict[str, int]:
        return {"chips": len(self.chip_ids), "unknown": int(sum(self.chip_unknown)),
                "selected": len(self._selected)}
