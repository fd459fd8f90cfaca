"""Finding, opening and sniffing corpus files: nothing blocks, nothing crashes.

Only regular files and folders are read: a FIFO, socket or device given as
a corpus is refused from its :func:`os.stat` before it is opened, so nothing
blocks on it (one found in a folder is skipped, never opened); files are
opened non-blocking and checked again with :func:`os.fstat` in case the path
changed in between. A folder that cannot be listed (or a subfolder) is
refused as "permission denied", never taken for an empty folder. Folders
are searched recursively for :data:`CORPUS_EXTS`, hidden files skipped, in
sorted order. A file ending in ``.gz``, ``.bz2`` or ``.xz`` is read through
the standard library's decompressor as it streams (:func:`open_corpus`),
its format the extension before (``wiki.txt.gz`` is running text); damaged
compressed data is one error naming the file and the line reached. The
first :data:`SNIFF_BYTES` of every file (decompressed) are sniffed:
more than 10% control bytes or more than 30% undecodable bytes mean a
binary file, which is refused (:func:`sniff`). Every refusal is a
:class:`core.corpus.CorpusError` naming the file and the reason.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import lzma
import os
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.corpus import CorpusError

__all__ = ["CORPUS_EXTS", "COMPRESSED", "corpus_format", "find_files", "open_corpus",
           "open_regular", "sniff"]

CORPUS_EXTS = (".txt", ".tsv", ".csv", ".jsonl")
#: Compressed corpus files: extension -> (name, decompressing reader of a binary file).
COMPRESSED = {".gz": ("gzip", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
              ".bz2": ("bzip2", lambda f: bz2.BZ2File(f, mode="rb")),
              ".xz": ("xz", lambda f: lzma.LZMAFile(f, mode="rb"))}
_DECOMPRESS_ERRORS = (gzip.BadGzipFile, EOFError, lzma.LZMAError, zlib.error, OSError,
                      ValueError)
SNIFF_BYTES = 8192


NUL_REASON = "binary file (contains NUL bytes), not text"
LONG_LINE_REASON = "line longer than 16 MiB; is this text?"


def _kind(mode: int) -> str:
    """What a non-regular, non-folder ``st_mode`` is, in words."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _os_reason(exc: OSError) -> str:
    """A short reason for an :class:`OSError` on a corpus path."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOENT:
        return "no such file or folder"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (the link points back to itself)"
    return (exc.strerror or str(exc)).rstrip(".")


def _not_a_file(path: str | os.PathLike, mode: int) -> CorpusError:
    return CorpusError(path, None,
                       f"is {_kind(mode)}; a corpus is a regular file or a folder")


def _walk(root: Path) -> list[Path]:
    """Corpus files under ``root``, sorted; hidden entries and linked folders skipped.

    A folder that cannot be listed raises :class:`CorpusError` ("permission
    denied"), so a locked folder is never reported as one without corpus files.
    Entries that are not regular files (FIFOs, sockets, devices, broken or
    looping links) are skipped without being opened.
    """
    found: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            raise CorpusError(folder, None,
                              f"cannot read this folder ({_os_reason(exc)})") from None
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif corpus_format(e.name) in CORPUS_EXTS and e.is_file():
                    found.append(Path(e.path))
            except OSError:
                continue  # a link that loops or vanished: not a corpus file
    return sorted(found)


def find_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand ``paths`` (files and folders) into the corpus files to read.

    Only :func:`os.stat` is called here: nothing is opened, so a FIFO or a
    device given as a corpus is refused without blocking.

    Raises
    ------
    CorpusError
        A path that does not exist or cannot be read, one that is neither a
        regular file nor a folder, or a folder without corpus files.
    """
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise CorpusError(path, None, _os_reason(exc)) from None
        except ValueError:  # a NUL character in the name
            raise CorpusError(path, None, "invalid path (contains a NUL character)") from None
        if stat.S_ISDIR(mode):
            found = _walk(path)
            if not found:
                raise CorpusError(
                    path, None, f"no corpus files ({', '.join(CORPUS_EXTS)}) in this folder"
                )
            out.extend(found)
        elif stat.S_ISREG(mode):
            out.append(path)
        else:
            raise _not_a_file(path, mode)
    if not out:
        raise CorpusError("(no corpus)", None, "no corpus files given")
    return out


def open_regular(path: Path):
    """Open ``path`` for binary reading, refusing anything but a regular file.

    The open is non-blocking (a FIFO swapped in after :func:`find_files`
    cannot block it) and :func:`os.fstat` checks what was opened.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise CorpusError(path, None, f"cannot read ({_os_reason(exc)})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_a_file(path, mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def corpus_format(path: str | os.PathLike) -> str:
    """A corpus file's format extension, lower case: ``.txt`` for ``a.txt`` and ``a.TXT.gz``."""
    stem, ext = os.path.splitext(Path(path).name.lower())
    return os.path.splitext(stem)[1] if ext in COMPRESSED else ext


class _Decompressed:
    """A decompressing reader whose errors name the file and the line reached."""

    def __init__(self, f, path: Path, kind: str, line: Callable[[], int | None]) -> None:
        self.f, self.path, self.kind, self.line = f, path, kind, line

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except _DECOMPRESS_ERRORS as exc:
            why = ("cut short" if isinstance(exc, EOFError) else
                   f"damaged ({exc})" if str(exc) else "damaged")
            raise CorpusError(self.path, self.line(),
                              f"the {self.kind} data is {why}") from None

    def read(self, n: int = -1) -> bytes:
        return self._call(self.f.read, n)

    def readline(self, n: int = -1) -> bytes:
        return self._call(self.f.readline, n)


@contextmanager
def open_corpus(path: Path, line: Callable[[], int | None] = lambda: None) -> Iterator:
    """``(reader, raw)`` of a corpus file: its decompressed bytes and the file under them.

    ``raw.tell()`` is the position in the file itself (progress by bytes of
    the file, compressed or not); ``line()`` names the line a decompression
    error is reported at.
    """
    with open_regular(path) as raw:
        ext = os.path.splitext(path.name.lower())[1]
        if ext not in COMPRESSED:
            yield raw, raw
            return
        kind, make = COMPRESSED[ext]
        with make(raw) as f:
            yield _Decompressed(f, path, kind, line), raw


def _control_ratio(block: bytes) -> float:
    arr = np.frombuffer(block, dtype=np.uint8)
    ctrl = ((arr < 32) & ~np.isin(arr, (8, 9, 10, 12, 13, 27))) | (arr == 127)
    return float(ctrl.mean()) if len(arr) else 0.0


def sniff(path: Path) -> None:
    """Refuse empty, binary and UTF-16 files (raises :class:`CorpusError`).

    Reads the first :data:`SNIFF_BYTES`; NUL bytes later in the file are
    refused by the readers with the same reason.
    """
    with open_corpus(path, lambda: 1) as (f, _):
        try:
            block = f.read(SNIFF_BYTES)
        except OSError as exc:
            raise CorpusError(path, None, f"cannot read ({_os_reason(exc)})") from None
    if not block:
        raise CorpusError(path, None, "empty file")
    if block[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise CorpusError(path, 1, "UTF-16 text is not supported; save the file as UTF-8")
    if b"\x00" in block:
        line = block[: block.index(b"\x00")].count(b"\n") + 1
        raise CorpusError(path, line, NUL_REASON)
    if _control_ratio(block) > 0.10:
        raise CorpusError(path, 1, "binary file (mostly control bytes), not text")
    text = block.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - block.count(b"\xef\xbf\xbd")
    if bad > 0.30 * max(len(text), 1) and len(block) >= 64:
        raise CorpusError(path, 1, "binary file (mostly invalid UTF-8), not text")
