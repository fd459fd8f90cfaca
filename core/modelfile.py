"""The model file: one ``.npz`` archive of arrays plus JSON metadata.

Layout: every array of the model is one member of the archive (loaded with
``allow_pickle=False``, so a model file can never run code), and the member
``__meta__`` holds UTF-8 JSON bytes (uint8 [n]) with at least::

    {"format": "noisekey-model", "format_version": 1, "app_version": "0.1.0", ...}

plus whatever the caller stores (tokenizer, vocabulary, settings). Reading a
file written by a newer format version is refused with a clear message rather
than guessed at; older versions are read (there is only version 1 so far).

Writes are atomic: the archive is written to a temporary file in the target's
folder (``.NAME.XXXXXXXX.tmp``, held under an advisory lock while it is
written), flushed and fsync'ed, given the mode a new file gets under the
user's umask (``0o666 & ~umask``; the temporary is created 0600), then moved
over the target with ``os.replace``. A failed write leaves any previous file
untouched and removes the temporary; temporaries left by a save that was
killed are removed by the next save of the same target (only those whose
lock no writer holds). Only a regular file or a new path is ever replaced: a
path naming a folder, a symlink, a FIFO, a socket or a device is refused
(:class:`OutPathError`), and so is a missing or read-only folder. An
operating-system error while writing (disk full, quota, I/O) is an
:class:`OutPathError` too (also an :class:`OSError`), whose message names the
target, never the temporary.

Reading is defensive (a model file may be crafted or damaged): the archive
is opened with :class:`Archive`, which reads the ``.npy`` header of a member
from the zip without decompressing its data, checks the declared dtype and
shape against what the caller expects and the declared size against the
bytes the zip holds (a member may declare at most ``max(RATIO_FLOOR,
MAX_RATIO × compressed size)`` bytes unless its shape is fixed by the
caller), and decompresses only the members that are asked for. Value checks
(ids within ``[lo, hi)``, finite floats, monotone offsets) run before an
array is handed out. Every violation is one :class:`ModelFileError` naming
the member and what is wrong.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core import __version__

FORMAT = "noisekey-model"
FORMAT_VERSION = 1
META_KEY = "__meta__"

#: A member whose shape the caller does not fix may declare at most
#: ``max(RATIO_FLOOR, MAX_RATIO × its compressed size)`` bytes: deflate packs
#: real model arrays 1-60×; a zero-filled bomb packs ~1000×.
MAX_RATIO = 256
RATIO_FLOOR = 16 << 20
#: The metadata (settings, vocabulary, figures) is at most this many bytes.
MAX_META_BYTES = 256 << 20


class ModelFileError(Exception):
    """A model file that cannot be read: ``str`` is ``"path: reason"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class OutPathError(ModelFileError):
    """A save target that is not a regular file (folder, symlink, FIFO, socket, device)."""


class SaveError(OutPathError, OSError):
    """Writing a model file failed (disk full, read-only or missing folder, I/O error).

    ``str`` is ``"TARGET: reason"``, naming the target path (never the
    temporary); ``errno`` is the operating system's error number. It is an
    :class:`OSError` as well, so callers that catch ``OSError`` still do.
    """

    def __init__(self, path: str | os.PathLike, reason: str, err: int | None = None) -> None:
        super().__init__(path, reason)
        self.errno = err
        self.filename = str(path)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.errno))


_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "the folder does not exist (a part of the path is a file)",
    errno.EISDIR: "is a folder; a model file replaces only a regular file (choose another path)",
    errno.EFBIG: "file too large for this file system",
}


def _save_error(path: str | os.PathLike, exc: OSError) -> SaveError:
    reason = _REASONS.get(exc.errno) or (exc.strerror or str(exc)).rstrip(".")
    if exc.errno == errno.EISDIR:
        return SaveError(path, reason, exc.errno)
    return SaveError(path, f"cannot write the model file: {reason}", exc.errno)


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # set and restore at once: the window is a few instructions
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _temp_re(name: str) -> re.Pattern:
    """Names :func:`tempfile.mkstemp` gives a temporary of ``name`` in :func:`save`."""
    return re.compile(re.escape(f".{name}.") + r"[A-Za-z0-9_]{8}" + re.escape(".tmp"))


def _lock(fd: int, blocking: bool = True) -> bool:
    """Advisory exclusive lock on ``fd``; True when held (always True without ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX: no locks, no cleaning
        return blocking
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def clean_stale_temps(path: str | os.PathLike) -> list[str]:
    """Remove temporaries of ``path`` left by saves that were killed.

    A temporary is removed only when it is a regular file whose advisory lock
    no process holds (a save in progress holds it until its replace). Errors
    are ignored: cleaning never fails a save. Returns the names removed.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    pattern = _temp_re(path.name)
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(folder) if pattern.fullmatch(n)]
    except OSError:
        return removed
    for name in names:
        full = folder / name
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd, blocking=False):
                os.unlink(full)
                removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def check_out_path(path: str | os.PathLike) -> None:
    """Refuse a save target that exists and is not a regular file.

    A new path and an existing regular file are fine (the latter is replaced
    atomically); a folder, a symbolic link, a FIFO, a socket or a device is
    never replaced: :class:`OutPathError`. The folder must exist and be
    writable (:class:`SaveError`, naming ``path``), so that a command can
    refuse a bad ``--out`` before its work rather than after.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        _check_folder(path)
        return
    except OSError as exc:
        raise _save_error(path, exc) from None
    except ValueError:  # a NUL character in the name
        raise OutPathError(path, "invalid path (contains a NUL character)") from None
    if stat.S_ISREG(mode):
        _check_folder(path)
        return
    kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")
    raise OutPathError(path, f"is {kind}; a model file replaces only a regular file "
                             "(choose another path)")


def _check_folder(path: str | os.PathLike) -> None:
    """The folder of ``path`` exists, is a folder and may be written (else :class:`SaveError`)."""
    folder = os.path.dirname(os.fspath(path)) or "."
    try:
        mode = os.stat(folder).st_mode
    except OSError as exc:
        raise _save_error(path, exc) from None
    if not stat.S_ISDIR(mode):
        raise _save_error(path, OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
    if not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EACCES
        try:
            if os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1):
                code = errno.EROFS
        except (OSError, AttributeError):
            pass
        raise _save_error(path, OSError(code, os.strerror(code)))


#: zlib level of a saved model file. Level 1 against numpy's savez_compressed
#: (level 6): the bundled corpus's model 9.1 MB against 8.9 MB, written in
#: 0.27 s against 0.55 s; a 1M-token dictionary's 60.0 MB against 56.4 MB,
#: 1.8 s against 5.6 s (stored: 145 MB). Reading takes the same time.
COMPRESS_LEVEL = 1


def _write_zip(f, data: dict[str, np.ndarray], level: int) -> None:
    """``np.savez_compressed``'s archive (``name.npy`` members) at zlib ``level`` (0: stored)."""
    import zipfile

    method = zipfile.ZIP_DEFLATED if level > 0 else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, mode="w", compression=method, allowZip64=True,
                         compresslevel=level if level > 0 else None) as z:
        for name, a in data.items():
            with z.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(a), allow_pickle=False)


def save(
    path: str | os.PathLike,
    arrays: dict[str, np.ndarray],
    meta: dict,
    compress: bool | int = True,
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
    compress : bool or int
        Zip deflate at :data:`COMPRESS_LEVEL` (True), at this level (1-9),
        or stored (False / 0).

    Returns
    -------
    Path of the written file.

    Raises
    ------
    OutPathError
        ``path`` exists and is not a regular file (nothing is written).
    SaveError
        The folder is missing or read-only, or writing failed (disk full,
        I/O error); no temporary is left and a previous file is untouched.
    """
    path = Path(path)
    level = COMPRESS_LEVEL if compress is True else int(compress)
    if not 0 <= level <= 9:
        raise ValueError(f"compress: a zlib level 0-9 (or True / False), got {compress!r}")
    check_out_path(path)
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
    clean_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # the folder is there (checked above) but takes no files
            raise SaveError(path, "cannot write the model file: cannot create a file in "
                                  "this folder", exc.errno) from None
        raise _save_error(path, exc) from None
    try:
        _lock(fd)  # held until the replace: a concurrent save's cleaning leaves it alone
        with os.fdopen(fd, "wb") as f:
            _write_zip(f, data, level)
            f.flush()
            os.fsync(f.fileno())
            mode = 0o666 & ~current_umask()
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            else:  # pragma: no cover - Windows before 3.13
                os.chmod(tmp, mode)
            if os.name == "nt":  # pragma: no cover - an open file cannot be replaced there
                f.close()
            check_out_path(path)  # nothing else appeared there while writing
            os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, ModelFileError):
            raise _save_error(path, exc) from None
        raise
    return path


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file holding a model (a zip archive with its metadata).

    Cheap: the zip directory only, nothing decompressed or checked (that is
    :class:`Archive`'s work when the file is read). A corpus is never one
    (corpus files are text), so a file named or dropped is a model exactly
    when this holds.
    """
    try:
        if not Path(path).is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            return f"{META_KEY}.npy" in z.namelist()
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def read_meta(path: str | os.PathLike) -> dict:
    """Only the metadata of a model file (cheap; checks format and version)."""
    with Archive(path) as ar:
        return ar.meta


def load(path: str | os.PathLike, arrays: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Read a model file written by :func:`save`.

    Every member is read through :class:`Archive` (header and size checked
    before its data is decompressed); callers that know the layout should use
    :class:`Archive` directly and read only the members they use.

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
        NoiseKey metadata, a format version newer than this program reads, or
        a member whose header is bad or whose declared size is out of bounds.
    """
    with Archive(path) as ar:
        out = {name: ar.read(name) for name in sorted(ar.names)} if arrays else {}
        return out, ar.meta


class Archive:
    """An opened model file: metadata read and checked, arrays read one by one on demand.

    Use as a context manager. :meth:`read` decompresses one member after
    checking its ``.npy`` header (dtype, shape, declared size against the
    zip's sizes) and checks its values; members never read are never
    decompressed. Every problem raises :class:`ModelFileError` naming the
    member.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise ModelFileError(path, "no such file") from None
        except OSError as exc:
            raise ModelFileError(path, f"cannot read ({exc.strerror})") from None
        if stat.S_ISDIR(st.st_mode):
            raise ModelFileError(path, "is a folder, not a model file")
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(path, "not a regular file (a model file is a regular file)")
        self.file_size = st.st_size
        # np.load reads any non-zip file as a pickle or .npy: check the zip magic
        # first so a wrong file gets a plain reason, not numpy's pickle advice.
        try:
            with open(self.path, "rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise ModelFileError(path, f"cannot read ({exc.strerror})") from None
        if magic != b"PK\x03\x04":
            raise ModelFileError(path, "not a NoiseKey model file (not an npz archive)")
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
            raise ModelFileError(path, f"not a NoiseKey model file or truncated ({exc})") from None
        except OSError as exc:
            raise ModelFileError(path, f"not a NoiseKey model file or corrupt ({exc})") from None
        self._infos = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
        if META_KEY not in self._infos:
            self.close()
            raise ModelFileError(path, "not a NoiseKey model file (no metadata entry)")
        try:
            self.meta = self._read_meta()
        except BaseException:
            self.close()
            raise

    # -- context manager -----------------------------------------------------
    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    # -- members -------------------------------------------------------------
    @property
    def names(self) -> set[str]:
        """Array members (without ``.npy``), metadata excluded."""
        return {n for n in self._infos if n != META_KEY}

    def __contains__(self, name: str) -> bool:
        return name in self._infos and name != META_KEY

    def error(self, name: str, reason: str) -> ModelFileError:
        """A :class:`ModelFileError` about member ``name``."""
        return ModelFileError(self.path, f"member {name!r}: {reason}")

    def header(self, name: str, fixed: bool = False) -> tuple[tuple[int, ...], np.dtype]:
        """Declared ``(shape, dtype)`` of member ``name``, read without decompressing its data.

        Checks that the dtype holds no objects and no fields, that the data
        the header declares is exactly what the zip entry holds, and (unless
        ``fixed``: the caller has checked the shape against the model's
        sizes) that it is at most ``max(RATIO_FLOOR, MAX_RATIO × compressed
        size)`` bytes.
        """
        info = self._infos.get(name)
        if info is None:
            raise ModelFileError(self.path, f"member {name!r} is missing")
        try:
            with self._zip.open(info) as fp:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                header_len = fp.tell()
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
            raise self.error(name, f"corrupt or truncated ({exc})") from None
        except (ValueError, TypeError, SyntaxError, OSError) as exc:
            raise self.error(name, f"bad array header ({exc})") from None
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
                or dtype.kind not in "biuf":
            raise self.error(name, f"unsupported dtype {dtype}")
        if any(int(n) < 0 for n in shape):
            raise self.error(name, f"negative size in shape {shape}")
        declared = math.prod(int(n) for n in shape) * dtype.itemsize
        if header_len + declared != info.file_size:
            raise self.error(name, f"header declares shape {shape} ({declared:,} bytes) but "
                                   f"the archive holds {max(info.file_size - header_len, 0):,} "
                                   "bytes of data")
        cap = max(RATIO_FLOOR, MAX_RATIO * info.compress_size)
        if not fixed and declared > cap:
            raise self.error(name, f"declares {declared:,} bytes in {info.compress_size:,} "
                                   f"compressed bytes (more than {MAX_RATIO}× or "
                                   f"{RATIO_FLOOR >> 20} MiB): refused")
        return tuple(int(n) for n in shape), dtype

    def read(self, name: str, dtype=None, shape: Iterable[int | None] | None = None,
             lo: int | float | None = None, hi: int | float | None = None,
             finite: bool = False, max_rows: int | None = None,
             sparse: bool = False) -> np.ndarray:
        """Member ``name`` as a native-order array, checked before and after decompressing.

        Parameters
        ----------
        dtype : expected dtype (kind and size; either byte order) or None (any)
        shape : expected shape, ``None`` for a free dimension, or None (any)
        lo, hi : every value must lie in ``[lo, hi)`` (ids, counts)
        finite : every value must be finite (floats)
        max_rows : bound on the first dimension, checked on the header
        sparse : a table of counts, mostly zeros, whose ``shape`` (fully given)
            the caller derived from the model's sizes: no compression-ratio cap
        """
        want = None if shape is None else tuple(shape)
        fixed = sparse and want is not None and all(n is not None for n in want)
        got, dt = self.header(name, fixed=fixed)
        if dtype is not None:
            exp = np.dtype(dtype)
            if dt.kind != exp.kind or dt.itemsize != exp.itemsize:
                raise self.error(name, f"dtype {dt}, expected {exp}")
        if want is not None:
            if len(got) != len(want) or any(w is not None and g != w
                                             for g, w in zip(got, want, strict=True)):
                txt = "(" + ", ".join("N" if w is None else str(w) for w in want) + ")"
                raise self.error(name, f"shape {got}, expected {txt}")
        if max_rows is not None and got and got[0] > max_rows:
            raise self.error(name, f"{got[0]:,} rows, more than the {max_rows:,} the model "
                                   "allows")
        try:
            with self._zip.open(self._infos[name]) as fp:
                a = np.lib.format.read_array(fp, allow_pickle=False)
        except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as exc:
            raise self.error(name, f"corrupt or truncated ({exc})") from None
        except (ValueError, OSError) as exc:
            raise self.error(name, f"corrupt ({exc})") from None
        if a.dtype.byteorder not in "=|":
            a = a.astype(a.dtype.newbyteorder("="))
        a = np.ascontiguousarray(a)
        if a.size and finite and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise self.error(name, "holds NaN or infinite values")
        if a.size and (lo is not None or hi is not None):
            mn, mx = a.min(), a.max()
            if (lo is not None and mn < lo) or (hi is not None and mx >= hi):
                rng = f"{lo if lo is not None else '-inf'}..{hi - 1 if hi is not None else 'inf'}"
                raise self.error(name, f"values must lie in {rng}, found {mn}..{mx}")
        return a

    def offsets(self, name: str, total: int, count: int | None = None,
                max_rows: int | None = None) -> np.ndarray:
        """Segment offsets (int64 [count + 1]): from 0, non-decreasing, ending at ``total``."""
        off = self.read(name, np.int64, (None if count is None else count + 1,),
                        max_rows=max_rows)
        if off.size == 0:
            raise self.error(name, "empty (offsets hold at least one entry)")
        if off[0] != 0 or off[-1] != total:
            raise self.error(name, f"offsets must run from 0 to {total}, found "
                                   f"{off[0]}..{off[-1]}")
        if off.size > 1 and (np.diff(off) < 0).any():
            raise self.error(name, "offsets decrease")
        return off

    def _read_meta(self) -> dict:
        info = self._infos[META_KEY]
        if info.file_size > MAX_META_BYTES:
            raise self.error(META_KEY, f"{info.file_size:,} bytes of metadata: refused")
        blob = self.read(META_KEY, np.uint8, (None,))
        try:
            meta = json.loads(bytes(blob).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
            raise ModelFileError(self.path, f"corrupt metadata ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(self.path, "not a NoiseKey model file (wrong format tag)")
        version = meta.get("format_version")
        if not isinstance(version, int):
            raise ModelFileError(self.path, "corrupt metadata (format_version missing)")
        if version > FORMAT_VERSION:
            raise ModelFileError(
                self.path,
                f"written by a newer NoiseKey (format {version}, app "
                f"{meta.get('app_version', '?')}); this version {__version__} reads format "
                f"{FORMAT_VERSION} or older — please upgrade",
            )
        return meta
