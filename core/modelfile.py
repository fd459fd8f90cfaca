"""The model file: one ``.npz`` archive of arrays plus JSON metadata.

Layout: every array of the model is one member of the archive (loaded with
``allow_pickle=False``, so a model file can never run code), and the member
``__meta__`` holds UTF-8 JSON bytes (uint8 [n]) with at least::

    {"format": "noisekey-model", "format_version": 1, "app_version": "0.1.0", ...}

plus whatever the caller stores (tokenizer, vocabulary, settings). Reading a
file written by a newer format version is refused with a clear message rather
than guessed at; older versions are read (there is only version 1 so far).

Writes are atomic: the archive is written to a temporary file in the target's
folder, flushed and fsync'ed, then moved over the target with ``os.replace``.
A failed write leaves any previous file untouched and removes the temporary.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from core import __version__

FORMAT = "noisekey-model"
FORMAT_VERSION = 1
META_KEY = "__meta__"


class ModelFileError(Exception):
    """A model file that cannot be read: ``str`` is ``"path: reason"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def save(
    path: str | os.PathLike,
    arrays: dict[str, np.ndarray],
    meta: dict,
    compress: bool = True,
) -> Path:
    """Write ``arrays`` and ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Target file (``.npz`` is conventional; the name is used as given).
    arrays : dict str -> ndarray
        Numeric or string arrays; object arrays are refused (they would need
        pickle). Names must not start with ``__``.
    meta : dict
        JSON-serialisable metadata. ``format``, ``format_version`` and
        ``app_version`` are filled in.
    compress : bool
        Use zip deflate (smaller, slower).

    Returns
    -------
    Path of the written file.
    """
    path = Path(path)
    data: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        if name.startswith("__"):
            raise ValueError(f"array name {name!r} is reserved")
        a = np.asarray(arr)
        if a.dtype.hasobject:
            raise ValueError(f"array {name!r} has dtype object; model files hold no pickles")
        data[name] = a
    full_meta = dict(meta)
    full_meta.update(format=FORMAT, format_version=FORMAT_VERSION, app_version=__version__)
    blob = json.dumps(full_meta, ensure_ascii=False, allow_nan=True).encode("utf-8")
    data[META_KEY] = np.frombuffer(blob, dtype=np.uint8)

    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def read_meta(path: str | os.PathLike) -> dict:
    """Only the metadata of a model file (cheap; checks format and version)."""
    return load(path, arrays=False)[1]


def load(path: str | os.PathLike, arrays: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Read a model file written by :func:`save`.

    Returns
    -------
    arrays : dict str -> ndarray
        Every stored array (empty if ``arrays`` is False).
    meta : dict
        The metadata, including ``format_version`` and ``app_version``.

    Raises
    ------
    ModelFileError
        Missing file, not a zip/npz archive, truncated or corrupt archive, no
        NoiseKey metadata, or a format version newer than this program reads.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file")
    if path.is_dir():
        raise ModelFileError(path, "is a folder, not a model file")
    # np.load reads any non-zip file as a pickle or .npy: check the zip magic
    # first so a wrong file gets a plain reason, not numpy's pickle advice.
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise ModelFileError(path, "not a NoiseKey model file (not an npz archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if META_KEY not in npz.files:
                raise ModelFileError(path, "not a NoiseKey model file (no metadata entry)")
            meta_bytes = npz[META_KEY]
            out = {k: npz[k] for k in npz.files if k != META_KEY} if arrays else {}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ModelFileError(path, f"not a NoiseKey model file or truncated ({exc})") from None
    except (ValueError, OSError) as exc:
        raise ModelFileError(path, f"not a NoiseKey model file or corrupt ({exc})") from None
    try:
        meta = json.loads(bytes(np.asarray(meta_bytes, dtype=np.uint8)).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ModelFileError(path, f"corrupt metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(path, "not a NoiseKey model file (wrong format tag)")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ModelFileError(path, "corrupt metadata (format_version missing)")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"written by a newer NoiseKey (format {version}, app {meta.get('app_version', '?')}); "
            f"this version {__version__} reads format {FORMAT_VERSION} or older — please upgrade",
        )
    return out, meta
