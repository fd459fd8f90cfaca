"""Corpora: streaming loaders for running text and input/output pairs.

Formats (chosen by extension; any other extension given explicitly is read as
running text, folders are searched recursively for the four below, hidden
files skipped, in sorted order):

``.txt``
    Running text. Blank lines separate paragraphs. Each paragraph is one
    document of the running stream (followed by ``<eos>``), and within a
    paragraph every two consecutive lines form an input -> output pair.
``.tsv``
    One pair per line, split on the first tab (later tabs belong to the output).
``.csv``
    Two columns read by :mod:`csv` (quoted fields, embedded newlines).
``.jsonl``
    One JSON object per line with string fields ``prompt``/``response`` or
    ``input``/``output``.

For tsv/csv a first row equal to a known header (``input,output``,
``prompt,response``, ``source,target``, ``question,answer``) is skipped.
Blank lines are skipped; a row with one column, or an empty input or output,
is an error naming the line.

Running stream
    ``stream`` (int32 [N]) is the text of every document, each followed by
    ``<eos>``. A pair from a pairs file is also written to the stream as
    ``input <sep> output <eos>``, so next-token training sees every token.
    With the ``byte`` tokenizer the lines of a paragraph are joined by the
    newline byte; with ``word`` whitespace is not a token.

Reading
    Only regular files and folders are read: a FIFO, socket or device given
    as a corpus is refused from its :func:`os.stat` before it is opened, so
    nothing blocks on it (one found in a folder is skipped, never opened);
    files are opened non-blocking and checked again with :func:`os.fstat` in
    case the path changed in between. A folder that cannot be listed (or a subfolder)
    is refused as "permission denied", never taken for an empty folder.

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

Held-out split (:meth:`Corpus.split`)
    Running text is cut by position: the first ``fraction`` of running-text
    tokens train, the rest test; a pair made from two lines goes with the side
    that holds both lines (the one or two pairs straddling the cut are dropped).
    Pairs from pairs files are split by a seeded permutation, and their stream
    records follow their pair, so no test pair is ever seen in training. The
    vocabulary is then rebuilt from the training part only (with the corpus's
    ``min_count``): tokens that occur only in the test part become ``<unk>``
    on both sides, so out-of-vocabulary rates on the test part are honest.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import stat
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.tokenize import (
    EOS,
    N_SPECIALS,
    SEP,
    SPECIALS,
    UNK,
    WORD_RE,
    Tokenizer,
    Vocab,
    build_vocab,
    byte_vocab,
    make_tokenizer,
)

CORPUS_EXTS = (".txt", ".tsv", ".csv", ".jsonl")
SNIFF_BYTES = 8192
MAX_LINE = 16 * 1024 * 1024
#: JSONL lines nest at most this deep (a record is one flat object).
MAX_JSON_DEPTH = 64
CHECK_EVERY = 256 * 1024
TEXT_DOC, PAIR_DOC = 0, 1
HEADERS = {
    ("input", "output"), ("prompt", "response"), ("source", "target"), ("question", "answer")
}
_NEWLINE_ID = N_SPECIALS + 10
# Bytes read per chunk. Each chunk's regex pass holds the GIL (~12 ms for
# 64 KB); 256 KB chunks stalled the window's event loop ~50 ms at a time while
# it trained, for no gain in throughput (measured: same load time).
CHUNK = 64 * 1024
_LINE_BY_LINE = False  # True: read .txt with the per-line reader (tests compare both)
_NL = N_SPECIALS  # provisional id of the line break in the chunked word reader
_NL_WORD_RE = re.compile(WORD_RE.pattern + r"|\n")

ProgressFn = Callable[[str, float, "dict | None"], None]
CancelFn = Callable[[], bool]


class CorpusError(Exception):
    """Bad corpus input. ``str`` is ``"path:line: reason"`` (``"path: reason"`` without a line)."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.reason))


class Cancelled(Exception):
    """Raised by a long core function when its ``cancel()`` callback returned True."""


@dataclass
class CorpusStats:
    """Figures of a corpus (``noisekey info`` prints them).

    ``tokens`` counts text tokens in the running stream (specials excluded,
    ``<unk>`` included); ``oov_rate`` is the share of those that are ``<unk>``
    at this corpus's ``min_count`` (or, for a test split, under the training
    vocabulary).
    """

    files: int
    lines: int
    paragraphs: int
    pairs: int
    tokens: int
    vocab_size: int
    oov_rate: float
    replacements: int
    bytes: int
    tokenizer: str
    min_count: int
    file_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class Corpus:
    """Token ids of a corpus: running stream, documents and input/output pairs.

    Attributes
    ----------
    vocab : Vocab
    tokenizer : Tokenizer
        Compares equal to its name (``corpus.tokenizer == "word"``).
    stream : int32 [N]
        Running text, documents separated (ended) by ``<eos>``.
    doc_offsets : int64 [D+1]
        Document ``j`` is ``stream[doc_offsets[j]:doc_offsets[j+1]]``.
    doc_kind : int8 [D]
        0 = paragraph of running text, 1 = record of a pairs file.
    doc_file : int32 [D]
        Index into ``files`` of each document's source file.
    in_ids, out_ids : int32
        Flat token ids of all pair inputs / outputs.
    in_offsets, out_offsets : int64 [P+1]
        Pair ``i`` is ``in_ids[in_offsets[i]:in_offsets[i+1]]`` ->
        ``out_ids[out_offsets[i]:out_offsets[i+1]]``.
    pair_doc : int64 [P]
        Document each pair came from.
    pair_start, pair_end : int64 [P]
        Stream span covering the pair's tokens (used to split honestly).
    files : list of str
    min_count : int
    """

    def __init__(
        self,
        vocab: Vocab,
        tokenizer: str | Tokenizer,
        stream: np.ndarray,
        doc_offsets: np.ndarray,
        doc_kind: np.ndarray,
        doc_file: np.ndarray,
        doc_lines: np.ndarray,
        doc_repl: np.ndarray,
        in_ids: np.ndarray,
        in_offsets: np.ndarray,
        out_ids: np.ndarray,
        out_offsets: np.ndarray,
        pair_doc: np.ndarray,
        pair_start: np.ndarray,
        pair_end: np.ndarray,
        files: Sequence[str] = (),
        min_count: int = 1,
        nbytes: int = 0,
    ) -> None:
        self.vocab = vocab
        self.tokenizer = make_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.stream = np.ascontiguousarray(stream, dtype=np.int32)
        self.doc_offsets = np.asarray(doc_offsets, dtype=np.int64)
        self.doc_kind = np.asarray(doc_kind, dtype=np.int8)
        self.doc_file = np.asarray(doc_file, dtype=np.int32)
        self.doc_lines = np.asarray(doc_lines, dtype=np.int64)
        self.doc_repl = np.asarray(doc_repl, dtype=np.int64)
        self.in_ids = np.ascontiguousarray(in_ids, dtype=np.int32)
        self.in_offsets = np.asarray(in_offsets, dtype=np.int64)
        self.out_ids = np.ascontiguousarray(out_ids, dtype=np.int32)
        self.out_offsets = np.asarray(out_offsets, dtype=np.int64)
        self.pair_doc = np.asarray(pair_doc, dtype=np.int64)
        self.pair_start = np.asarray(pair_start, dtype=np.int64)
        self.pair_end = np.asarray(pair_end, dtype=np.int64)
        self.files = list(files)
        self.min_count = int(min_count)
        self.nbytes = int(nbytes)

    # ------------------------------------------------------------------ access
    @property
    def n_pairs(self) -> int:
        return len(self.in_offsets) - 1

    @property
    def n_docs(self) -> int:
        return len(self.doc_offsets) - 1

    def __len__(self) -> int:
        """Number of tokens in the running stream (specials included)."""
        return len(self.stream)

    def __repr__(self) -> str:
        return (
            f"Corpus(tokenizer={self.tokenizer.name!r}, tokens={len(self.stream)}, "
            f"pairs={self.n_pairs}, vocab={len(self.vocab)}, files={len(self.files)})"
        )

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Input and output ids (int32) of pair ``i``."""
        a, b = self.in_offsets[i], self.in_offsets[i + 1]
        c, d = self.out_offsets[i], self.out_offsets[i + 1]
        return self.in_ids[a:b], self.out_ids[c:d]

    def pair_text(self, i: int) -> tuple[str, str]:
        """Decoded input and output text of pair ``i``."""
        x, y = self.pair(i)
        return self.tokenizer.decode(x, self.vocab), self.tokenizer.decode(y, self.vocab)

    def document(self, j: int) -> np.ndarray:
        """Ids of document ``j`` (with its trailing ``<eos>``)."""
        return self.stream[self.doc_offsets[j] : self.doc_offsets[j + 1]]

    def documents(self) -> Iterator[np.ndarray]:
        for j in range(self.n_docs):
            yield self.document(j)

    def pair_source(self, i: int) -> str:
        """File that pair ``i`` came from."""
        return self.files[int(self.doc_file[self.pair_doc[i]])] if self.files else ""

    @property
    def stats(self) -> CorpusStats:
        s = self.stream
        n_special = int(np.count_nonzero((s < N_SPECIALS) & (s != UNK)))
        tokens = len(s) - n_special
        unk = int(np.count_nonzero(s == UNK))
        used = sorted(set(self.doc_file.tolist()))
        return CorpusStats(
            files=len(used),
            lines=int(self.doc_lines.sum()),
            paragraphs=int(np.count_nonzero(self.doc_kind == TEXT_DOC)),
            pairs=self.n_pairs,
            tokens=tokens,
            vocab_size=len(self.vocab),
            oov_rate=unk / tokens if tokens else 0.0,
            replacements=int(self.doc_repl.sum()),
            bytes=self.nbytes,
            tokenizer=self.tokenizer.name,
            min_count=self.min_count,
            file_names=[self.files[i] for i in used] if self.files else [],
        )

    # ------------------------------------------------------------ derivation
    def _select(
        self,
        token_mask: np.ndarray,
        pair_mask: np.ndarray,
        vocab: Vocab | None = None,
        lut: np.ndarray | None = None,
    ) -> Corpus:
        """Sub-corpus of the masked stream tokens and pairs, optionally remapped.

        A kept pair's stream span must be kept entirely.
        """
        token_mask = np.asarray(token_mask, dtype=bool)
        sel = np.flatnonzero(pair_mask)
        doc_of_tok = np.repeat(np.arange(self.n_docs), np.diff(self.doc_offsets))
        kept = np.bincount(doc_of_tok[token_mask], minlength=self.n_docs)
        keep_doc = kept > 0
        doc_map = np.cumsum(keep_doc) - 1
        new_pos = np.cumsum(token_mask) - 1
        in_ids, in_off = _gather_ragged(self.in_ids, self.in_offsets, sel)
        out_ids, out_off = _gather_ragged(self.out_ids, self.out_offsets, sel)
        stream = self.stream[token_mask]
        if lut is not None:
            stream, in_ids, out_ids = lut[stream], lut[in_ids], lut[out_ids]
        if len(sel):
            starts = new_pos[self.pair_start[sel]]
        else:
            starts = np.zeros(0, np.int64)
        return Corpus(
            vocab if vocab is not None else self.vocab,
            self.tokenizer,
            stream,
            np.concatenate([[0], np.cumsum(kept[keep_doc])]),
            self.doc_kind[keep_doc],
            self.doc_file[keep_doc],
            self.doc_lines[keep_doc],
            self.doc_repl[keep_doc],
            in_ids,
            in_off,
            out_ids,
            out_off,
            doc_map[self.pair_doc[sel]],
            starts,
            starts + (self.pair_end[sel] - self.pair_start[sel]),
            self.files,
            self.min_count,
            self.nbytes,
        )

    def split(self, fraction: float = 0.9, seed: int = 0) -> tuple[Corpus, Corpus]:
        """Honest train/test split (see the module docstring).

        Parameters
        ----------
        fraction : float in [0, 1]
            Share of running-text tokens and of file pairs that train.
        seed : int
            Seed of the pair permutation.

        Returns
        -------
        train, test : Corpus
            Both use the vocabulary counted on ``train`` (word tokenizer);
            tokens seen only in ``test`` are ``<unk>`` there.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        n = len(self.stream)
        pos = np.arange(n)
        doc_of_tok = np.repeat(np.arange(self.n_docs), np.diff(self.doc_offsets))
        is_rec = self.doc_kind[doc_of_tok] == PAIR_DOC
        text_pos = np.flatnonzero(~is_rec)
        k = int(round(fraction * len(text_pos)))
        cut = int(text_pos[k]) if k < len(text_pos) else n
        rec_docs = np.flatnonzero(self.doc_kind == PAIR_DOC)
        perm = np.random.default_rng(seed).permutation(len(rec_docs))
        train_doc = np.zeros(self.n_docs, dtype=bool)
        train_doc[rec_docs[perm[: int(round(fraction * len(rec_docs)))]]] = True
        train_tok = np.where(is_rec, train_doc[doc_of_tok], pos < cut)
        test_tok = ~train_tok
        pair_rec = self.doc_kind[self.pair_doc] == PAIR_DOC
        pair_train = np.where(pair_rec, train_doc[self.pair_doc], self.pair_end <= cut)
        pair_test = np.where(pair_rec, ~train_doc[self.pair_doc], self.pair_start >= cut)

        counts = np.bincount(self.stream[train_tok], minlength=len(self.vocab)).astype(np.int64)
        if self.tokenizer.name == "byte":
            vocab, lut = byte_vocab(counts), None
        else:
            itos = self.vocab.itos
            nz = np.flatnonzero(counts[N_SPECIALS:]) + N_SPECIALS
            vocab = build_vocab(
                {itos[i]: int(counts[i]) for i in nz.tolist()},
                min_count=self.min_count,
                special_counts={t: int(counts[i]) for i, t in enumerate(SPECIALS)},
            )
            lut = remap_table(self.vocab, vocab)
        return (
            self._select(train_tok, pair_train, vocab, lut),
            self._select(test_tok, pair_test, vocab, lut),
        )

    def shards(self, n: int) -> list[Corpus]:
        """Split into ``n`` consecutive runs of whole documents of similar size.

        All shards share this corpus's vocabulary; ``concat`` of the shards
        gives back this corpus's arrays.
        """
        if n < 1:
            raise ValueError("need n >= 1 shards")
        bounds = np.searchsorted(
            self.doc_offsets, np.linspace(0, len(self.stream), n + 1)[1:-1], side="left"
        )
        edges = np.concatenate([[0], bounds, [self.n_docs]])
        doc_of_tok = np.repeat(np.arange(self.n_docs), np.diff(self.doc_offsets))
        out = []
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            dmask = np.zeros(self.n_docs, dtype=bool)
            dmask[a:b] = True
            out.append(self._select(dmask[doc_of_tok], dmask[self.pair_doc]))
        return out

    def with_vocab(self, vocab: Vocab) -> Corpus:
        """The same corpus with ids in ``vocab`` (unknown tokens -> ``<unk>``).

        Use it to encode evaluation data with a trained model's vocabulary.
        """
        if self.tokenizer.name == "byte":
            return self._select(np.ones(len(self.stream), bool), np.ones(self.n_pairs, bool), vocab)
        return self._select(
            np.ones(len(self.stream), bool),
            np.ones(self.n_pairs, bool),
            vocab,
            remap_table(self.vocab, vocab),
        )


def remap_table(src: Vocab, dst: Vocab) -> np.ndarray:
    """int32 [len(src)]: id in ``dst`` of every ``src`` token (``<unk>`` if absent)."""
    get = dst.stoi.get
    return np.fromiter((get(t, UNK) for t in src.itos), dtype=np.int32, count=len(src))


def _gather_ragged(
    ids: np.ndarray, offsets: np.ndarray, sel: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``sel`` of a ragged array (flat ``ids`` + ``offsets``), vectorised."""
    lens = offsets[sel + 1] - offsets[sel]
    new_off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    idx = np.repeat(offsets[sel] - new_off[:-1], lens) + np.arange(new_off[-1])
    return ids[idx], new_off


def concat(corpora: Sequence[Corpus], min_count: int | None = None) -> Corpus:
    """Join corpora into one (documents and pairs in order).

    Vocabularies are merged by token string and counts summed, then
    ``min_count`` (default: the largest of the parts) is applied again. Tokens
    a part had already folded into ``<unk>`` stay ``<unk>``.
    """
    if not corpora:
        raise ValueError("nothing to concatenate")
    name = corpora[0].tokenizer.name
    if any(c.tokenizer.name != name for c in corpora):
        raise ValueError("cannot concatenate corpora with different tokenizers")
    mc = max(c.min_count for c in corpora) if min_count is None else int(min_count)
    if name == "byte":
        vocab = byte_vocab(sum(c.vocab.counts for c in corpora))
        luts = [None] * len(corpora)
    else:
        merged: dict[str, int] = {}
        spec = np.zeros(N_SPECIALS, np.int64)
        for c in corpora:
            spec += c.vocab.counts[:N_SPECIALS]
            toks, cnts = c.vocab.itos[N_SPECIALS:], c.vocab.counts[N_SPECIALS:].tolist()
            for t, n in zip(toks, cnts, strict=True):
                merged[t] = merged.get(t, 0) + n
        spec_counts = dict(zip(SPECIALS, spec.tolist(), strict=True))
        vocab = build_vocab(merged, mc, special_counts=spec_counts)
        luts = [remap_table(c.vocab, vocab) for c in corpora]
    files: list[str] = []
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (
        "stream", "doc_len", "doc_kind", "doc_file", "doc_lines", "doc_repl", "in_ids", "in_len",
        "out_ids", "out_len", "pair_doc", "pair_start", "pair_end")}
    n_tok = n_doc = 0
    for c, lut in zip(corpora, luts, strict=True):
        fidx = {}
        for i, f in enumerate(c.files):
            if f not in files:
                files.append(f)
            fidx[i] = files.index(f)
        remap = (lambda a: a) if lut is None else (lambda a, lut=lut: lut[a])
        parts["stream"].append(remap(c.stream))
        parts["doc_len"].append(np.diff(c.doc_offsets))
        parts["doc_kind"].append(c.doc_kind)
        parts["doc_file"].append(
            np.array([fidx.get(int(i), 0) for i in c.doc_file], dtype=np.int32)
            if c.files else c.doc_file)
        parts["doc_lines"].append(c.doc_lines)
        parts["doc_repl"].append(c.doc_repl)
        parts["in_ids"].append(remap(c.in_ids))
        parts["in_len"].append(np.diff(c.in_offsets))
        parts["out_ids"].append(remap(c.out_ids))
        parts["out_len"].append(np.diff(c.out_offsets))
        parts["pair_doc"].append(c.pair_doc + n_doc)
        parts["pair_start"].append(c.pair_start + n_tok)
        parts["pair_end"].append(c.pair_end + n_tok)
        n_tok += len(c.stream)
        n_doc += c.n_docs
    cat = {k: np.concatenate(v) for k, v in parts.items()}

    def offs(lens: np.ndarray) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)

    return Corpus(
        vocab, name, cat["stream"], offs(cat["doc_len"]), cat["doc_kind"], cat["doc_file"],
        cat["doc_lines"], cat["doc_repl"], cat["in_ids"], offs(cat["in_len"]), cat["out_ids"],
        offs(cat["out_len"]), cat["pair_doc"], cat["pair_start"], cat["pair_end"], files, mc,
        sum(c.nbytes for c in corpora),
    )


# ---------------------------------------------------------------------- files
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
                elif os.path.splitext(e.name)[1].lower() in CORPUS_EXTS and e.is_file():
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


def _control_ratio(block: bytes) -> float:
    arr = np.frombuffer(block, dtype=np.uint8)
    ctrl = ((arr < 32) & ~np.isin(arr, (8, 9, 10, 12, 13, 27))) | (arr == 127)
    return float(ctrl.mean()) if len(arr) else 0.0


def sniff(path: Path) -> None:
    """Refuse empty, binary and UTF-16 files (raises :class:`CorpusError`).

    Reads the first :data:`SNIFF_BYTES`; NUL bytes later in the file are
    refused by the readers with the same reason.
    """
    with open_regular(path) as f:
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


class _Reader:
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
        with open_regular(path) as f:
            while True:
                raw = f.readline(MAX_LINE + 1)
                if not raw:
                    break
                self.lineno += 1
                self.lines += 1
                self.done += len(raw)
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
        with open_regular(path) as f:
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
                self.done += len(data)
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


class _Builder:
    """Accumulates provisional ids while files are read."""

    def __init__(self, tokenizer: str, reader: _Reader) -> None:
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


def _read_txt(path: Path, reader: _Reader, b: _Builder) -> None:
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


def _add_record(path: Path, line: int, x: str, y: str, b: _Builder) -> None:
    if not x.strip():
        raise CorpusError(path, line, "empty input field")
    if not y.strip():
        raise CorpusError(path, line, "empty output field")
    b.record(x.strip(), y.strip())


def _read_tsv(path: Path, reader: _Reader, b: _Builder) -> None:
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


def _read_csv(path: Path, reader: _Reader, b: _Builder) -> None:
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


def _read_jsonl(path: Path, reader: _Reader, b: _Builder) -> None:
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
        for kx, ky in (("prompt", "response"), ("input", "output")):
            if kx in obj and ky in obj:
                x, y = obj[kx], obj[ky]
                if not isinstance(x, str) or not isinstance(y, str):
                    raise CorpusError(path, n, f"fields {kx!r} and {ky!r} must be strings")
                _add_record(path, n, x, y, b)
                break
        else:
            raise CorpusError(
                path, n, "expected fields 'prompt'/'response' or 'input'/'output', "
                f"found {', '.join(map(repr, list(obj)[:6])) or 'none'}"
            )


READERS = {".txt": _read_txt, ".tsv": _read_tsv, ".csv": _read_csv, ".jsonl": _read_jsonl}


def load_corpus(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    tokenizer: str = "word",
    min_count: int = 1,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Corpus:
    """Read corpus files and folders into one :class:`Corpus`.

    Parameters
    ----------
    paths : path or iterable of paths
        Files (.txt, .tsv, .csv, .jsonl; other extensions read as .txt) and
        folders (searched recursively for those four extensions).
    tokenizer : {"word", "byte"}
    min_count : int
        Word tokens seen fewer times become ``<unk>`` (ignored for bytes).
    progress : callable(stage, fraction, info), optional
        Called about every 256 KiB read and at every file boundary.
    cancel : callable() -> bool, optional
        Polled as often as ``progress``; True raises :class:`Cancelled`.

    Raises
    ------
    CorpusError
        Bad input, naming file, line and reason.
    Cancelled
    """
    make_tokenizer(tokenizer)  # validates the name
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = find_files(paths)
    for f in files:
        sniff(f)
    sizes = [f.stat().st_size for f in files]
    reader = _Reader(sum(sizes), progress, cancel)
    b = _Builder(tokenizer, reader)
    names: list[str] = []
    for i, f in enumerate(files):
        b.file = i
        names.append(str(f))
        n_docs = len(b.doc_kind)
        READERS.get(f.suffix.lower(), _read_txt)(f, reader, b)
        b.end_file()
        if len(b.doc_kind) == n_docs:
            what = "no text (only blank lines)" if f.suffix.lower() in (".txt", "") else "no rows"
            raise CorpusError(f, None, what if f.suffix.lower() in READERS else
                              "no text (only blank lines)")
    if progress is not None:
        progress("building vocabulary", 1.0, None)
    return b.finish(tokenizer, min_count, names, sum(sizes))


def resources_dir() -> Path:
    """The shipped ``resources/`` folder: beside ``core`` in a checkout, else the
    installed data package ``noisekey_resources``."""
    here = Path(__file__).resolve().parents[1] / "resources"
    if here.is_dir():
        return here
    import importlib.util

    spec = importlib.util.find_spec("noisekey_resources")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bundled resources folder is missing from this install")
    return Path(next(iter(spec.submodule_search_locations)))


def default_corpus_path() -> Path:
    """The corpus the app opens with (``resources/default_corpus.txt``)."""
    return resources_dir() / "default_corpus.txt"
