"""Reading corpus files: formats, streaming, bad input.

Formats (chosen by extension; any other extension given explicitly is read as
running text, folders are searched recursively for the four below, hidden
files skipped, in sorted order). Each may be compressed, ``a.txt.gz``,
``.bz2`` or ``.xz``: read through the standard library's decompressor as it
streams, progress by bytes of the compressed file
(:func:`core.files.open_corpus`):

``.txt``
    Running text. Blank lines separate paragraphs. Each paragraph is one
    document of the running stream (followed by ``<eos>``), and within a
    paragraph every two consecutive lines form an input -> output pair.
``.tsv``
    One pair per line, split on the first tab (later tabs belong to the output).
``.csv``
    Two columns read by :mod:`csv` (quoted fields, embedded newlines).
``.jsonl``
    One JSON object per line: an input -> output pair from string fields
    ``prompt``/``response``, ``input``/``output``, ``question``/``answer`` or
    ``source``/``target``, or else running text from a string field ``text``
    (the common format of language-model corpora), its blank-line blocks
    paragraphs as in ``.txt``. Other fields are ignored.

For tsv/csv a first row equal to a known header (``input,output``,
``prompt,response``, ``source,target``, ``question,answer``) is skipped.
Blank lines are skipped; a row with one column, or an empty input or output,
is an error naming the line.

Reading
    Files are found, opened and sniffed by :mod:`core.files` (regular files
    only, nothing blocks, binary files refused).

    Files are read line by line in binary (a 1 GB file never sits in memory
    whole; one line may not exceed 16 MiB, a check that costs one pass over
    the bytes however long the line), progress is reported by bytes read
    across all files, and ``cancel()`` is polled about every 256 KiB (raising
    :class:`Cancelled`). The first 8 KiB of every file are sniffed: more than
    10% control bytes or more than 30% undecodable bytes mean a binary file,
    which is refused. A NUL byte anywhere in a file (in the first 8 KiB or
    gigabytes later) refuses it the same way, naming the line: a NUL is never
    text and never becomes a token. Otherwise bytes that are not UTF-8 are
    replaced by U+FFFD and counted (``stats.replacements``); a UTF-8 BOM is
    dropped, UTF-16 is refused with a hint. A JSONL line nested deeper than
    :data:`MAX_JSON_DEPTH` arrays or objects is refused before it is parsed.

    Running text with the word tokenizer is read in 256 KiB chunks of whole
    lines: one regex pass per chunk (line breaks kept as a marker token) and
    numpy bookkeeping for lines, paragraphs and pairs, about 1.5x the speed of
    the per-line reader it replaces (both are kept; tests check they give
    identical arrays). The regex itself is the remaining cost.

Vocabulary
    Tokens get provisional ids while reading (one dict lookup per token); the
    final :class:`~core.tokenize.Vocab` (specials, then by count) is built at
    the end and all arrays are remapped with one vectorised lookup.
"""

from __future__ import annotations

import csv
import json
import re
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.corpus import (
    PAIR_DOC,
    TEXT_DOC,
    CancelFn,
    Cancelled,
    Corpus,
    CorpusError,
    ProgressFn,
)
from core.files import LONG_LINE_REASON, NUL_REASON, open_corpus
from core.tokenize import (
    EOS,
    N_SPECIALS,
    SEP,
    SPECIALS,
    WORD_RE,
    build_vocab,
    byte_vocab,
)

MAX_LINE = 16 * 1024 * 1024
#: JSONL lines nest at most this deep (a record is one flat object).
MAX_JSON_DEPTH = 64
CHECK_EVERY = 256 * 1024
#: Input -> output field names: a tsv or csv header row (skipped) and a JSONL
#: record's fields (the first pair present wins).
PAIR_FIELDS = (("prompt", "response"), ("input", "output"), ("question", "answer"),
               ("source", "target"))
HEADERS = set(PAIR_FIELDS)
_NEWLINE_ID = N_SPECIALS + 10
# Bytes read per chunk. Each chunk's regex pass holds the GIL (~12 ms for
# 64 KB); 256 KB chunks stalled the window's event loop ~50 ms at a time while
# it trained, for no gain in throughput (measured: same load time).
CHUNK = 64 * 1024
_LINE_BY_LINE = False  # True: read .txt with the per-line reader (tests compare both)
_NL = N_SPECIALS  # provisional id of the line break in the chunked word reader
_NL_WORD_RE = re.compile(WORD_RE.pattern + r"|\n")



class Reader:
    """Line reader shared by all loaders: bytes progress, cancel, replacements."""

    def __init__(
        self, total: int, progress: ProgressFn | None, cancel: CancelFn | None
    ) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.progress = progress
        self.cancel = cancel
        self.next_check = CHECK_EVERY
        self.replacements = 0
        self.lines = 0
        self.path = Path()
        self.lineno = 0

    def tick(self, force: bool = False) -> None:
        if not force and self.done < self.next_check:
            return
        self.next_check = self.done + CHECK_EVERY
        if self.cancel is not None and self.cancel():
            raise Cancelled(f"cancelled while reading {self.path}")
        if self.progress is not None:
            self.progress(
                "reading corpus",
                min(self.done / self.total, 1.0),
                {"file": str(self.path), "line": self.lineno, "bytes": self.done,
                 "total": self.total},
            )

    def lines_of(self, path: Path) -> Iterator[tuple[int, str, int]]:
        """Yield ``(line number, text without newline, replacements)``."""
        self.path, self.lineno = path, 0
        self.tick(force=True)
        base = self.done
        with open_corpus(path, lambda: self.lineno + 1) as (f, fraw):
            while True:
                raw = f.readline(MAX_LINE + 1)
                if not raw:
                    break
                self.lineno += 1
                self.lines += 1
                self.done = base + fraw.tell()  # bytes of the file (compressed or not)
                if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                    raise CorpusError(path, self.lineno, LONG_LINE_REASON)
                if b"\x00" in raw:
                    raise CorpusError(path, self.lineno, NUL_REASON)
                if self.lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    text = raw.decode("utf-8")
                    rep = 0
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", errors="replace")
                    rep = text.count("\ufffd") - raw.count(b"\xef\xbf\xbd")
                    self.replacements += rep
                self.tick()
                yield self.lineno, text.rstrip("\r\n"), rep
        self.tick(force=True)

    def chunks_of(self, path: Path) -> Iterator[tuple[str, np.ndarray, bool]]:
        """Yield whole lines about :data:`CHUNK` bytes at a time.

        Yields ``(text, replacements per line int64 [lines], ends with newline)``.
        Every byte is looked at a bounded number of times: a line longer than
        a chunk is gathered as a list of blocks (its length kept as a running
        sum, refused as soon as it passes :data:`MAX_LINE`), never re-joined
        or re-scanned per block.
        """
        self.path, self.lineno = path, 0
        self.tick(force=True)
        pending: list[bytes] = []  # the start of a line that has no newline yet
        pending_len = 0
        base = self.done
        with open_corpus(path, lambda: self.lineno + 1) as (f, fraw):
            while True:
                block = f.read(CHUNK)
                if block:
                    if b"\x00" in block:
                        i = block.index(b"\x00")
                        raise CorpusError(path, self.lineno + block.count(b"\n", 0, i) + 1,
                                          NUL_REASON)
                    cut = block.rfind(b"\n") + 1
                    if cut == 0:
                        pending.append(block)
                        pending_len += len(block)
                        if pending_len > MAX_LINE:
                            raise CorpusError(path, self.lineno + 1, LONG_LINE_REASON)
                        continue
                    data = b"".join([*pending, block[:cut]]) if pending else block[:cut]
                    pending = [block[cut:]] if cut < len(block) else []
                    pending_len = len(block) - cut
                else:
                    data = b"".join(pending)
                    pending = []
                    if not data:
                        break
                if len(data) > MAX_LINE:
                    _check_line_lengths(data, path, self.lineno)
                self.done = base + fraw.tell()  # bytes of the file (compressed or not)
                if self.lineno == 0 and data.startswith(b"\xef\xbb\xbf"):
                    data = data[3:]
                ends_nl = data.endswith(b"\n")
                n = data.count(b"\n") + (0 if ends_nl else 1)
                try:
                    text = data.decode("utf-8")
                    rep = np.zeros(n, dtype=np.int64)
                except UnicodeDecodeError:
                    parts = data.split(b"\n")[:n]
                    dec = [x.decode("utf-8", errors="replace") for x in parts]
                    rep = np.array(
                        [t.count("\ufffd") - x.count(b"\xef\xbf\xbd")
                         for x, t in zip(parts, dec, strict=True)], dtype=np.int64)
                    text = "\n".join(dec) + ("\n" if ends_nl else "")
                    self.replacements += int(rep.sum())
                self.lineno += n
                self.lines += n
                self.tick(force=True)
                yield text, rep, ends_nl
                if not block:
                    break
        self.tick(force=True)


def _check_line_lengths(data: bytes, path: Path, lines_before: int) -> None:
    """Raise if a line of ``data`` holds more than :data:`MAX_LINE` bytes (newline excluded).

    One vectorised pass over ``data``; the last line counts even without a
    newline.
    """
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    if not len(ends) or ends[-1] != len(data) - 1:
        ends = np.append(ends, len(data))
    lengths = np.diff(np.concatenate([[-1], ends])) - 1
    bad = np.flatnonzero(lengths > MAX_LINE)
    if len(bad):
        raise CorpusError(path, lines_before + int(bad[0]) + 1, LONG_LINE_REASON)


class Builder:
    """Accumulates provisional ids while files are read."""

    def __init__(self, tokenizer: str, reader: Reader) -> None:
        self.byte = tokenizer == "byte"
        self.reader = reader
        self.line_mark = self.repl_mark = 0
        self.intern: dict[str, int] = {t: i for i, t in enumerate(SPECIALS)}
        self.stream = array("i")
        self.doc_off = array("q", [0])
        self.doc_kind = array("b")
        self.doc_file = array("i")
        self.doc_lines = array("q")
        self.doc_repl = array("q")
        self.in_ids, self.out_ids = array("i"), array("i")
        self.in_off, self.out_off = array("q", [0]), array("q", [0])
        self.pair_doc, self.pair_start, self.pair_end = array("q"), array("q"), array("q")
        self.file = 0
        if not self.byte:
            self.intern["\n"] = _NL  # never a token; marks line ends in text_chunk
        self.open_line: np.ndarray | None = None  # last line of a paragraph still open
        self.open_start = 0

    def ids(self, text: str) -> array:
        if self.byte:
            a = array("i")
            a.frombytes(
                (np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + N_SPECIALS)
                .tobytes()
            )
            return a
        toks = WORD_RE.findall(text)
        d = self.intern
        ids = list(map(d.get, toks))  # C-level lookups; new tokens are rare after warm-up
        if None in ids:
            for i, t in enumerate(toks):
                if ids[i] is None:
                    ids[i] = d.setdefault(t, len(d))
        return array("i", ids)

    def _end_doc(self, kind: int) -> None:
        """Close a document; it owns the lines (and replacements) read since the last one."""
        self.stream.append(EOS)
        self.doc_off.append(len(self.stream))
        self.doc_kind.append(kind)
        self.doc_file.append(self.file)
        self.doc_lines.append(self.reader.lines - self.line_mark)
        self.doc_repl.append(self.reader.replacements - self.repl_mark)
        self.line_mark, self.repl_mark = self.reader.lines, self.reader.replacements

    def end_file(self) -> None:
        """Give trailing blank lines of a file to its last document."""
        if len(self.doc_lines):
            self.doc_lines[-1] += self.reader.lines - self.line_mark
            self.doc_repl[-1] += self.reader.replacements - self.repl_mark
        self.line_mark, self.repl_mark = self.reader.lines, self.reader.replacements

    def _pair(self, x: array, y: array, start: int, end: int) -> None:
        self.in_ids.extend(x)
        self.in_off.append(len(self.in_ids))
        self.out_ids.extend(y)
        self.out_off.append(len(self.out_ids))
        self.pair_doc.append(len(self.doc_kind))
        self.pair_start.append(start)
        self.pair_end.append(end)

    def paragraph(self, lines: list[str]) -> None:
        """A paragraph of running text: a document, and pairs of consecutive lines."""
        encoded = [self.ids(line) for line in lines]
        starts = []
        for i, ids in enumerate(encoded):
            if i and self.byte:
                self.stream.append(_NEWLINE_ID)
            starts.append(len(self.stream))
            self.stream.extend(ids)
        for i in range(len(encoded) - 1):
            self._pair(encoded[i], encoded[i + 1], starts[i], starts[i + 1] + len(encoded[i + 1]))
        self._end_doc(TEXT_DOC)

    def text_chunk(self, text: str, rep: np.ndarray, ends_nl: bool) -> None:
        """Running text, word tokenizer: a chunk of whole lines, vectorised.

        Gives exactly what :meth:`paragraph` gives line by line (tested), with
        one regex pass and numpy bookkeeping per chunk instead of per line. A
        paragraph still open at the chunk's end continues into the next chunk
        (its last line is carried as ``open_line``).
        """
        toks = _NL_WORD_RE.findall(text)
        d = self.intern
        for t in sorted(set(toks).difference(d)):
            d[t] = len(d)
        ids = np.fromiter(map(d.__getitem__, toks), dtype=np.int32, count=len(toks))
        virt = 0
        if self.open_line is not None:  # the open paragraph's last line, already in the stream
            ids = np.concatenate([self.open_line, np.array([_NL], np.int32), ids])
            virt = 1
        skip = len(self.open_line) + 1 if virt else 0
        is_nl = ids == _NL
        tok = ~is_nl
        line = np.cumsum(is_nl) - is_nl  # a line break belongs to the line it ends
        n_seg = int(is_nl.sum()) + 1
        n_lines = n_seg - 1 if ends_nl else n_seg
        lens = np.bincount(line[tok], minlength=n_seg)[:n_lines]
        nonblank = lens > 0
        nb_next = np.zeros(n_lines, bool)
        nb_next[:-1] = nonblank[1:]
        blank_next = np.zeros(n_lines, bool)
        blank_next[:-1] = ~nonblank[1:]
        has_succ = nonblank & nb_next
        has_pred = np.zeros(n_lines, bool)
        has_pred[1:] = has_succ[:-1]
        closing = nonblank & blank_next

        emit = tok.copy()
        emit[:skip] = False
        emitted = np.bincount(line[emit], minlength=n_seg)[:n_lines]
        cum = np.cumsum(emitted)
        close_idx = np.flatnonzero(closing)
        chunk_stream = np.insert(ids[emit], cum[close_idx], EOS).astype(np.int32)

        base = len(self.stream)
        n_docs = len(self.doc_kind)
        clos_excl = np.cumsum(closing) - closing
        start = base + (cum - emitted) + clos_excl
        if virt:
            start[0] = self.open_start
        end = start + lens

        def full(mask: np.ndarray) -> np.ndarray:
            out = np.zeros(n_seg, bool)
            out[:n_lines] = mask
            return out

        pi = np.flatnonzero(has_succ)
        in_base, out_base = len(self.in_ids), len(self.out_ids)
        _extend(self.in_ids, ids[tok & full(has_succ)[line]])
        _extend(self.out_ids, ids[tok & full(has_pred)[line]])
        _extend(self.in_off, in_base + np.cumsum(lens[has_succ]))
        _extend(self.out_off, out_base + np.cumsum(lens[has_pred]))
        _extend(self.pair_doc, n_docs + clos_excl[pi])
        _extend(self.pair_start, start[pi])
        _extend(self.pair_end, end[pi + 1])

        _extend(self.stream, chunk_stream)
        k = len(close_idx)
        if k:
            lines_before = self.reader.lines - len(rep)
            line_ends = lines_before + close_idx + 2 - virt  # through the closing blank line
            crep = np.cumsum(rep)
            rep_ends = (self.reader.replacements - int(rep.sum())) + crep[close_idx + 1 - virt]
            _extend(self.doc_off, base + cum[close_idx] + np.arange(k) + 1)
            _extend(self.doc_kind, np.full(k, TEXT_DOC))
            _extend(self.doc_file, np.full(k, self.file))
            _extend(self.doc_lines, np.diff(np.concatenate([[self.line_mark], line_ends])))
            _extend(self.doc_repl, np.diff(np.concatenate([[self.repl_mark], rep_ends])))
            self.line_mark, self.repl_mark = int(line_ends[-1]), int(rep_ends[-1])
        if n_lines and nonblank[-1]:
            self.open_line = ids[tok & (line == n_lines - 1)].copy()
            self.open_start = int(start[n_lines - 1])
        else:
            self.open_line = None

    def close_open(self) -> None:
        """End a paragraph left open by :meth:`text_chunk` (end of file)."""
        if self.open_line is not None:
            self._end_doc(TEXT_DOC)
            self.open_line = None

    def record(self, x: str, y: str) -> bool:
        """A pair from a pairs file; False if either side has no tokens."""
        xi, yi = self.ids(x), self.ids(y)
        if not xi or not yi:
            return False
        start = len(self.stream)
        self.stream.extend(xi)
        self.stream.append(SEP)
        self.stream.extend(yi)
        self._pair(xi, yi, start, len(self.stream) + 1)
        self._end_doc(PAIR_DOC)
        return True

    def finish(self, tokenizer: str, min_count: int, files: list[str], nbytes: int) -> Corpus:
        def arr(a: array, dtype) -> np.ndarray:
            # A view, not a copy: a 1 GB corpus must not be held twice.
            return np.frombuffer(a, dtype=dtype) if len(a) else np.zeros(0, dtype)

        stream = arr(self.stream, np.int32)
        in_ids, out_ids = arr(self.in_ids, np.int32), arr(self.out_ids, np.int32)
        if self.byte:
            vocab = byte_vocab(np.bincount(stream, minlength=N_SPECIALS + 256).astype(np.int64))
        else:
            itos = list(self.intern)
            counts = np.bincount(stream, minlength=len(itos)).astype(np.int64)
            vocab = build_vocab(
                ((t, c) for t, c in zip(itos[N_SPECIALS:], counts[N_SPECIALS:].tolist(),
                                        strict=True) if t != "\n"),
                min_count=min_count,
                special_counts=dict(zip(SPECIALS, counts[:N_SPECIALS].tolist(), strict=True)),
            )
            lut = np.fromiter((vocab.id(t) for t in itos), dtype=np.int32, count=len(itos))
            stream, in_ids, out_ids = lut[stream], lut[in_ids], lut[out_ids]
            self.stream = self.in_ids = self.out_ids = array("i")  # free the provisional ids
        return Corpus(
            vocab, tokenizer, stream, arr(self.doc_off, np.int64), arr(self.doc_kind, np.int8),
            arr(self.doc_file, np.int32), arr(self.doc_lines, np.int64),
            arr(self.doc_repl, np.int64), in_ids, arr(self.in_off, np.int64), out_ids,
            arr(self.out_off, np.int64), arr(self.pair_doc, np.int64),
            arr(self.pair_start, np.int64), arr(self.pair_end, np.int64), files, min_count, nbytes,
        )


def _extend(arr: array, values: np.ndarray) -> None:
    """Append a numpy array to an :class:`array.array` of matching item size."""
    arr.frombytes(np.ascontiguousarray(values, dtype=_ARRAY_DTYPES[arr.typecode]).tobytes())


_ARRAY_DTYPES = {"i": np.int32, "q": np.int64, "b": np.int8}


def read_txt(path: Path, reader: Reader, b: Builder) -> None:
    if not b.byte and not _LINE_BY_LINE:
        for text, rep, ends_nl in reader.chunks_of(path):
            b.text_chunk(text, rep, ends_nl)
        b.close_open()
        return
    para: list[str] = []
    for _, line, _ in reader.lines_of(path):
        if line.strip():
            para.append(line.rstrip())
        elif para:
            b.paragraph(para)
            para = []
    if para:
        b.paragraph(para)


def _is_header(x: str, y: str) -> bool:
    return (x.strip().lower(), y.strip().lower()) in HEADERS


def _add_record(path: Path, line: int, x: str, y: str, b: Builder) -> None:
    if not x.strip():
        raise CorpusError(path, line, "empty input field")
    if not y.strip():
        raise CorpusError(path, line, "empty output field")
    b.record(x.strip(), y.strip())


def _read_tsv(path: Path, reader: Reader, b: Builder) -> None:
    first = True
    for n, line, _ in reader.lines_of(path):
        if not line.strip():
            continue
        if "\t" not in line:
            raise CorpusError(
                path, n, "expected 2 tab-separated columns (input, output), found 1"
            )
        x, y = line.split("\t", 1)
        if first and _is_header(x, y):
            first = False
            continue
        first = False
        _add_record(path, n, x, y, b)


def _read_csv(path: Path, reader: Reader, b: Builder) -> None:
    rows = csv.reader(line + "\n" for _, line, _ in reader.lines_of(path))
    first = True
    try:
        for row in rows:
            n = rows.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2:
                raise CorpusError(
                    path, n, f"expected 2 comma-separated columns (input, output), found {len(row)}"
                )
            if first and _is_header(*row):
                first = False
                continue
            first = False
            _add_record(path, n, row[0], row[1], b)
    except csv.Error as exc:
        raise CorpusError(path, rows.line_num, f"bad CSV ({exc})") from None


_JSON_TOKEN_RE = re.compile(r'"(?:[^"\\]+|\\.)*"?|[\[\]{}]')


def _json_depth(line: str, limit: int) -> int:
    """Nesting depth of arrays and objects in ``line`` (strings skipped), up to ``limit + 1``.

    One linear scan, no recursion, so a line of 100,000 brackets is refused
    in milliseconds rather than reaching the parser.
    """
    depth = top = 0
    for m in _JSON_TOKEN_RE.finditer(line):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > top:
                top = depth
                if top > limit:
                    break
        elif c in "]}":
            depth -= 1
    return top


def _read_jsonl(path: Path, reader: Reader, b: Builder) -> None:
    for n, line, _ in reader.lines_of(path):
        if not line.strip():
            continue
        if line.count("[") + line.count("{") > MAX_JSON_DEPTH and \
                _json_depth(line, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise CorpusError(path, n, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(path, n, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:  # pragma: no cover - the depth check comes first
            raise CorpusError(path, n, "JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise CorpusError(path, n, f"expected a JSON object, got {type(obj).__name__}")
        for kx, ky in PAIR_FIELDS:
            if kx in obj and ky in obj:
                x, y = obj[kx], obj[ky]
                if not isinstance(x, str) or not isinstance(y, str):
                    raise CorpusError(path, n, f"fields {kx!r} and {ky!r} must be strings")
                _add_record(path, n, x, y, b)
                break
        else:
            if "text" not in obj:
                raise CorpusError(
                    path, n, "expected a field 'text' or the fields "
                    + ", ".join(f"'{kx}'/'{ky}'" for kx, ky in PAIR_FIELDS)
                    + f"; found {', '.join(map(repr, list(obj)[:6])) or 'none'}")
            _add_text(path, n, obj["text"], b)



def _add_text(path: Path, line: int, text: object, b: Builder) -> None:
    """A JSONL ``text`` field: running text, its blank-line blocks paragraphs as in .txt."""
    if not isinstance(text, str):
        raise CorpusError(path, line, "field 'text' must be a string")
    paragraphs = [[ln.rstrip() for ln in block.splitlines() if ln.strip()]
                  for block in re.split(r"\n[ \t\r\f\v]*\n", text)]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise CorpusError(path, line, "empty text field")
    for lines in paragraphs:
        b.paragraph(lines)


READERS = {".txt": read_txt, ".tsv": _read_tsv, ".csv": _read_csv, ".jsonl": _read_jsonl}
