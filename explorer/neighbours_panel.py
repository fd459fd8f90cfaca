"""The neighbours panel: what the model knows about the selected token.

A dock beside the views showing :func:`core.neighbours.neighbours` for the
token selected in :class:`explorer.state.ExplorerState`: its nearest keys
under the model's metric (the exact answer and the hash index's, side by
side, with the index's recall), the training windows of C that end in it
with their most frequent successors and counts, and the nearest training
sentences by layer signature. Every token in the panel is a link: a click
selects it in all views.

The figures are computed on the GUI thread when the selection or the model
changes and the panel is visible (a few milliseconds: one brute-force scan
of the keys, one index query, one signature query).
"""

from __future__ import annotations

import html

from PySide6.QtCore import QTimer, QUrl
from PySide6.QtWidgets import QDockWidget, QTextBrowser, QWidget

from explorer.state import ExplorerState

EMPTY = ("<p style='color:gray'>Select a token (click it in any view, click a prompt chip, "
         "or find it with Ctrl+F) to see its neighbours here.</p>")


def _tok(tid: int, text: str) -> str:
    shown = text if any(c.isalnum() for c in text) else f"“{text}”"
    return f"<a href='tok:{tid}'>{html.escape(shown)}</a>"


def render(nb) -> str:
    """HTML of a :class:`core.neighbours.Neighbours`."""
    e = html.escape
    parts = [f"<h3 style='margin:2px'>{_tok(nb.token, nb.text)} "
             f"<span style='font-weight:normal;color:gray'>id {nb.token} · "
             f"{nb.count} in training</span></h3>"]
    parts.append(f"<p style='margin:2px'><b>Nearest keys</b> ({e(nb.metric)} distance δ): "
                 f"exact scan | hash index (recall {nb.recall:.2f})</p>")
    rows = []
    for i in range(max(len(nb.exact), len(nb.index))):
        cells = []
        for lst in (nb.exact, nb.index):
            if i < len(lst):
                tid, text, d = lst[i]
                cells.append(f"<td>{_tok(tid, text)}</td><td align='right'>{d:.3f}</td>")
            else:
                cells.append("<td></td><td></td>")
        miss = "" if i >= len(nb.exact) or nb.exact[i][0] in {t for t, _, _ in nb.index} \
            else " <span style='color:#d62728'>✗</span>"
        rows.append(f"<tr>{cells[0]}<td>{miss}</td><td width='12'></td>{cells[1]}</tr>")
    parts.append("<table cellspacing='0' cellpadding='1'>" + "".join(rows) + "</table>")
    parts.append(f"<p style='margin:6px 2px 2px'><b>Training windows</b> ending in it: "
                 f"{nb.n_windows} windows, {nb.n_events} events</p>")
    if nb.successors:
        succ = ", ".join(f"{_tok(t, s)}&nbsp;{c}" for t, s, c in nb.successors)
        parts.append(f"<p style='margin:2px'>followed by: {succ}</p>")
    if nb.windows:
        rows = [f"<tr><td>{e(' '.join(w.context))}</td><td align='right'>{w.total}</td>"
                f"<td>→ {e(', '.join(f'{s} {c}' for s, c in w.successors))}</td></tr>"
                for w in nb.windows]
        parts.append("<table cellspacing='0' cellpadding='1'><tr style='color:gray'><td>window"
                     "</td><td>n</td><td>successors</td></tr>" + "".join(rows) + "</table>")
    parts.append("<p style='margin:6px 2px 2px'><b>Nearest training sentences</b> "
                 "(signature cosine)</p>")
    if nb.sentences:
        parts.append("<table cellspacing='0' cellpadding='1'>" + "".join(
            f"<tr><td valign='top'>{sc:.3f}</td><td>{e(text)}</td></tr>"
            for text, sc in nb.sentences) + "</table>")
    else:
        parts.append("<p style='margin:2px;color:gray'>none (no signature bank)</p>")
    return "".join(parts)


class NeighboursPanel(QDockWidget):
    """Dock with the neighbours of the selected token (see module docstring)."""

    def __init__(self, state: ExplorerState, parent: QWidget | None = None) -> None:
        super().__init__("Neighbours", parent)
        self.setObjectName("neighbours_panel")
        self.state = state
        self.browser = QTextBrowser()
        self.browser.setOpenLinks(False)
        self.browser.anchorClicked.connect(self._link)
        self.browser.setHtml(EMPTY)
        self.setWidget(self.browser)
        self.result = None  # the core.neighbours.Neighbours shown now
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.refresh)
        state.tokenSelected.connect(lambda _: self._timer.start())
        state.modelChanged.connect(lambda _: self._timer.start())
        self.visibilityChanged.connect(lambda vis: vis and self._timer.start())

    def _link(self, url: QUrl) -> None:
        s = url.toString()
        if s.startswith("tok:"):
            model = self.state.model
            ex = self.state.explanation
            tid = int(s[4:])
            if model is not None and ex is not None and 0 <= tid < len(model.vocab.itos):
                text = model.vocab.itos[tid]
                if text in ex.vocab:  # the explanation's ids may belong to an older model
                    self.state.select_token(ex.vocab.index(text))
                    return
            self.state.select_token(tid)

    def model_token(self) -> int:
        """The selection as an id of the model in use (-1 for none)."""
        model, text = self.state.model, self.state.token_text
        if model is None or text is None:
            return -1
        return int(model.vocab.stoi.get(text, -1))

    def refresh(self) -> None:
        """Recompute for the current selection (only while the panel is visible)."""
        if not self.isVisible():
            return
        tid = self.model_token()
        if tid < 0:
            self.result = None
            self.browser.setHtml(EMPTY)
            return
        from core.neighbours import neighbours

        self.result = neighbours(self.state.model, tid)
        self.browser.setHtml(render(self.result))
