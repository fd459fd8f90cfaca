"""core is a library without Qt: importing all of it must not load a binding."""

import pkgutil
import subprocess
import sys

import core


def test_core_never_imports_qt():
    mods = [m.name for m in pkgutil.iter_modules(core.__path__, "core.")]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('PySide6', 'PyQt6', 'PyQt5', 'pyqtgraph', 'explorer')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
