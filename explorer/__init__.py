"""NoiseKey Explorer: the PySide6 + pyqtgraph window over :mod:`core`.

PySide6 6.12.0 wheels lose references to ``None``/``True`` on CPython < 3.12
and abort a pyqtgraph window within seconds; ``pyproject.toml`` keeps that
release out on those interpreters instead of patching reference counts.
"""
