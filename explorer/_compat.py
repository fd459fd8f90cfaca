"""Work around PySide6 6.12 wheels on CPython < 3.12: singletons lose references.

Measured here (PySide6-Essentials 6.12.0, CPython 3.11.7): every call of a
``void`` Qt method (``QPainter.save``, ``QObject.setObjectName``, ...) lowers
the reference count of ``None`` by one, and every ``SignalInstance.emit``
lowers that of ``True``. The abi3 wheels are built with 3.12 headers, where
``Py_RETURN_NONE``/``Py_RETURN_TRUE`` skip the increment because those
objects are immortal; on 3.11 they are not, and after some ten thousand
painter calls CPython aborts with ``none_dealloc: deallocating None`` (a
pyqtgraph window dies within seconds).

:func:`immortalize_singletons` gives ``None``, ``True``, ``False``,
``Ellipsis`` and ``NotImplemented`` a reference count of about 2**60 — what
CPython 3.12 does by design — so the missing increments can never bring them
to zero. It is a no-op on 3.12+. It must run before Qt is used; importing
:mod:`explorer` does it.
"""

from __future__ import annotations

import ctypes
import sys

_BIG = 1 << 60


def immortalize_singletons() -> bool:
    """Raise the refcounts of the interpreter's singletons; True if done."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    for obj in (None, True, False, Ellipsis, NotImplemented):
        cnt = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is the first field
        if cnt.value < _BIG:
            cnt.value += _BIG
    return True
