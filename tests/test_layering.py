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


def test_import_contracts_hold():
    """pyproject.toml's import-linter contracts: core free of Qt and the window; views
    read only core's plain result objects."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout
