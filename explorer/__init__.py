"""NoiseKey Explorer: the PySide6 + pyqtgraph window over :mod:`core`."""

from explorer._compat import immortalize_singletons

immortalize_singletons()
