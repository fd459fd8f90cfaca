"""Corpora: the container of token ids, its split and shards, and loading.

:func:`load_corpus` reads files through :mod:`core.readers` (formats, streaming,
bad input) into a :class:`Corpus`.

Running stream
    ``stream`` (int32 [N]) is the text of every document, each followed by
    ``<eos>``. A pair from a pairs file is also written to the stream as
    ``input <sep> output <eos>``, so next-token training sees every token.
    With the ``byte`` tokenizer the lines of a paragraph are joined by the
    newline byte; with ``word`` whitespace is not a token.

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

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.tokenize import (
    N_SPECIALS,
    SPECIALS,
    UNK,
    Tokenizer,
    Vocab,
    build_vocab,
    byte_vocab,
    make_tokenizer,
)

#: kinds of document: a paragraph of running text, a pair from a pairs file
TEXT_DOC, PAIR_DOC = 0, 1

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
        Files (.txt, .tsv, .csv, .jsonl; other extensions read as .txt; any
        of them compressed as .gz, .bz2 or .xz) and folders (searched
        recursively for those four extensions, compressed or not).
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
    from core.files import corpus_format, find_files, sniff
    from core.readers import READERS, Builder, Reader, read_txt

    make_tokenizer(tokenizer)  # validates the name
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = find_files(paths)
    for f in files:
        sniff(f)
    sizes = [f.stat().st_size for f in files]
    reader = Reader(sum(sizes), progress, cancel)
    b = Builder(tokenizer, reader)
    names: list[str] = []
    for i, f in enumerate(files):
        b.file = i
        names.append(str(f))
        n_docs = len(b.doc_kind)
        fmt = corpus_format(f)
        READERS.get(fmt, read_txt)(f, reader, b)
        b.end_file()
        if len(b.doc_kind) == n_docs:
            what = "no text (only blank lines)" if fmt in (".txt", "") else "no rows"
            raise CorpusError(f, None, what if fmt in READERS else
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
