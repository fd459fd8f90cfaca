"""NoiseKey Explorer: the PySide6 + pyqtgraph window over :mod:`core`."""
