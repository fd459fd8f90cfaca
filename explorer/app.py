"""Start the window: ``noisekey [--screenshot OUT.png] [--prompt TEXT] [CORPUS...]``.

``--screenshot`` runs on Qt's offscreen platform (unless a platform was
chosen with ``QT_QPA_PLATFORM``), trains or loads the model, types the
prompt, waits until every view drew its explanation, saves the window as a
PNG (or SVG by suffix) and exits 0; a training or explanation error prints
one line and exits 2. ``--select TOKEN`` selects a token in every view and
centres the Embeddings view on it (a token the model's vocabulary lacks is
an error: one line, exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

T_WALL = time.time()


def window_parser(epilog: bool = True) -> argparse.ArgumentParser:
    """Options of the window (``noisekey`` without a command)."""
    p = argparse.ArgumentParser(
        add_help=epilog,
        prog="noisekey",
        usage="noisekey [--screenshot OUT] [--prompt TEXT] [--select TOKEN] [--no-cache] "
              "[--size WxH] "
              "[--timeout S] [CORPUS ... | MODEL]",
        description="Without a COMMAND, noisekey opens the NoiseKey Explorer window on the "
                    "corpora given (default: the bundled corpus), or on a model file saved by "
                    "`noisekey train --out`.",
        epilog="Commands (info, train, generate, eval, bench, ...): see `noisekey --help`."
        if epilog else None)
    p.add_argument("corpora", nargs="*", metavar="CORPUS",
                   help="corpus files or folders (default: bundled corpus); a model file "
                        "saved by `noisekey train --out` is opened instead of training")
    p.add_argument("--screenshot", metavar="OUT", help="render the window offscreen, save, exit")
    p.add_argument("--prompt", default=None, metavar="TEXT", help="prompt to type into the window")
    p.add_argument("--select", default=None, metavar="TOKEN",
                   help="select TOKEN in every view and centre Embeddings on it "
                        "(an unknown token: exit 2 with --screenshot)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached models")
    p.add_argument("--size", default="1500x950", metavar="WxH",
                   help="window size for --screenshot")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds --screenshot waits for training and drawing")
    return p


def window_help() -> str:
    """The window's options as a help section (for the top-level ``--help``)."""
    text = window_parser(epilog=False).format_help()
    return text.replace("usage: ", "window: ", 1)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    return window_parser().parse_args(list(argv))


def no_display() -> str | None:
    """Why the window cannot open here, or None: on Linux, no X or Wayland display.

    Qt would print its platform-plugin diagnostics over several lines and
    abort; a session without a display (ssh, a container) gets one line
    saying what to do instead. ``QT_QPA_PLATFORM`` set by the user (for
    example ``offscreen`` or ``vnc``) is trusted.
    """
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return ("no display to open the window on (DISPLAY and WAYLAND_DISPLAY are unset): "
            "use --screenshot OUT.png to render it offscreen, run it under xvfb-run, "
            "or use a command (noisekey --help)")


def make_app(offscreen: bool = False):
    """The ``QApplication`` (created once).

    pyqtgraph is not imported here: the window applies the palette to it
    when it builds its views (:func:`explorer.view_base.apply_palette`).

    The GIL switch interval drops from 5 ms to 1 ms: every event the GUI
    thread handles passes through Python (the window's drop filter, the
    views' paint), and against a training thread each of those waited up to
    the interval for the GIL. Measured with ``noisekey bench gui``: the
    99th-percentile event-loop gap while training fell from 13–16 ms to
    4–6 ms, training time unchanged (7.1 s).
    """
    sys.setswitchinterval(0.001)
    if offscreen:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    from PySide6.QtWidgets import QApplication

    if offscreen:
        quiet_offscreen_warnings()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("NoiseKey Explorer")
    app.setOrganizationName("noisekey")
    return app


_QUIET = ("This plugin does not support",)


def quiet_offscreen_warnings() -> None:
    """Drop the offscreen platform's notes on unsupported window features.

    Headless runs promise one line on stderr for an error; the offscreen
    plugin otherwise prints "This plugin does not support propagateSizeHints()"
    for every window shown. Every other Qt message still goes to stderr.
    """
    from PySide6.QtCore import qInstallMessageHandler

    def handler(mode, context, message: str) -> None:
        if not message.startswith(_QUIET):
            sys.stderr.write(message + "\n")

    qInstallMessageHandler(handler)


def run_app(argv: Sequence[str]) -> int:
    """Entry point of the window (called by :func:`explorer.cli.main`)."""
    args = parse_args(argv)
    for c in args.corpora:
        if not Path(c).exists():
            sys.stderr.write(f"noisekey: error: {c}: no such file or folder\n")
            return 2
    from core.modelfile import is_model_file

    models = [c for c in args.corpora if is_model_file(c)]
    if len(models) > 1:
        sys.stderr.write("noisekey: error: one model file at a time: "
                         + ", ".join(models) + "\n")
        return 2
    corpora = [c for c in args.corpora if c not in models]
    if not args.screenshot and (why := no_display()):
        sys.stderr.write(f"noisekey: error: {why}\n")
        return 2
    app = make_app(offscreen=bool(args.screenshot))
    from explorer.main_window import DEFAULT_PROMPT, MainWindow

    prompt = DEFAULT_PROMPT if args.prompt is None else args.prompt
    win = MainWindow(corpora=corpora or None, prompt=prompt, use_cache=not args.no_cache,
                     defer_views=not args.screenshot, model_file=models[0] if models else None)
    report = os.environ.get("NOISEKEY_STARTUP_REPORT")
    if report:
        startup_report(app, win, report)
    if args.screenshot:
        return screenshot(app, win, args)
    if args.select:
        from PySide6.QtCore import Qt

        win.viewsDrawn.connect(lambda: win.find_token(args.select),
                               Qt.ConnectionType.SingleShotConnection)
    win.show()
    return int(app.exec())


def startup_report(app, win, path: str) -> None:
    """Record wall times of window shown and first views drawn, then quit.

    Used by ``noisekey bench gui``: times are ``time.time()`` values, so the
    parent compares them with the moment it started the process. "shown" is
    the window's first paint; "views" the four views built; "drawn" the
    first explanation drawn in them; ``stage:NAME`` the first report of each
    training stage and "trained" the model's arrival.
    """
    import json

    from PySide6.QtCore import QTimer

    times: dict[str, float] = {"imported": T_WALL}

    def shown() -> None:
        times.setdefault("shown", time.time())

    win.firstPainted.connect(shown)
    win.viewsBuilt.connect(lambda: times.setdefault("views", time.time()))
    # when each training stage first reported: where a cold start's time went
    win.trainer.progressed.connect(
        lambda stage, *_: times.setdefault(f"stage:{stage}", time.time()))
    win.trainer.succeeded.connect(lambda *_: times.setdefault("trained", time.time()))

    def drawn() -> None:
        win.grid.repaint()
        times["drawn"] = time.time()
        Path(path).write_text(json.dumps(times))
        QTimer.singleShot(0, win.close)
        QTimer.singleShot(0, app.quit)

    win.viewsDrawn.connect(drawn)


def screenshot(app, win, args: argparse.Namespace) -> int:
    """Wait for the model and the drawn views, then save the window."""
    from PySide6.QtCore import QEventLoop, QTimer

    w, h = (int(v) for v in args.size.lower().split("x"))
    win.resize(w, h)
    win.show()
    result: dict[str, object] = {}
    loop = QEventLoop()

    def fail(msg: str) -> None:
        result["error"] = msg
        loop.quit()

    def drawn() -> None:
        result["ok"] = True
        QTimer.singleShot(50, loop.quit)  # let the views paint once more

    win.viewsDrawn.connect(drawn)
    win.trainingFailed.connect(fail)
    win.explainer.failed.connect(fail)
    win.corpus_panel.errorRaised.connect(fail)
    QTimer.singleShot(int(args.timeout * 1000), lambda: fail("timed out"))
    if not win.corpus_panel.paths() and win.opening_model is None:
        fail("no corpus to train on")
    else:
        loop.exec()
    code = 0
    if "ok" in result and args.select and not win.find_token(args.select):
        result = {"error": f"unknown token {args.select!r}: not in the model's vocabulary"}
    if "ok" in result:
        app.processEvents()
        out = win.export(win, args.screenshot)
        sys.stdout.write(f"{out}\n")
    else:
        sys.stderr.write(f"noisekey: error: {result.get('error', 'no result')}\n")
        code = 2
    win.close()
    return code
