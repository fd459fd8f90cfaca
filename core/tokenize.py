"""Tokenizers and vocabularies.

Two tokenizers share one interface (:class:`Tokenizer`):

``word``
    Tokens are runs of word characters, runs of one repeated symbol from
    :data:`RUN_CHARS` (``>>>``, ``**``, ``...``, triple quotes, a reST underline
    ``=====``), or one other punctuation character; case kept, whitespace
    dropped. A run is one token because it is one unit of the text: an
    underline split into single ``=`` tokens made the three-token state see
    only ``= = =`` and loop (or copy an underline of the wrong length), and
    made the easy repeats inflate next-token accuracy. Decoding joins tokens
    with a space between two word tokens and after punctuation, except before
    closing punctuation and after opening brackets, and always where two
    tokens would merge into one run; whatever the spacing, re-splitting the
    decoded text gives back the same tokens (tested with hypothesis).
``byte``
    Raw UTF-8 bytes: id ``4 + b`` for byte ``b``. No vocabulary to learn (the
    Byte-Latent idea); the vocabulary is always the 4 specials + 256 bytes and
    decoding is exact (invalid UTF-8 produced by a model is shown as U+FFFD).

Vocabulary (:class:`Vocab`): the specials ``<bos> <eos> <sep> <unk>`` take ids
0..3, then the tokens seen at least ``min_count`` times, most frequent first,
ties broken by the token string so the order is reproducible. ``counts[UNK]``
holds the total count of the rare tokens folded into ``<unk>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

SPECIALS = ("<bos>", "<eos>", "<sep>", "<unk>")
BOS, EOS, SEP, UNK = 0, 1, 2, 3
N_SPECIALS = len(SPECIALS)
TOKENIZERS = ("word", "byte")

RUN_CHARS = "*=-~^#+.:<>/'\"`"
"""Symbols whose runs are single tokens (``=====`` is one token, ``((`` two)."""
WORD_RE = re.compile(r"\w+|" + "".join(re.escape(c) + "+|" for c in RUN_CHARS) + r"[^\w\s]")
_OPENERS = frozenset("([{\"'`")
_CLOSERS = frozenset(".,;:!?)]}%")


class Vocab:
    """Token strings and their corpus counts.

    Parameters
    ----------
    itos : list of str, length V
        Token string of every id; the first four are :data:`SPECIALS`.
    counts : int64 [V], optional
        Occurrences of every token in the corpus it was built from (zeros if
        omitted).
    """

    def __init__(self, itos: Iterable[str], counts: np.ndarray | None = None) -> None:
        self.itos: list[str] = list(itos)
        if tuple(self.itos[:N_SPECIALS]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the specials {SPECIALS}")
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate token strings in vocabulary")
        if counts is None:
            counts = np.zeros(len(self.itos), dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        if self.counts.shape != (len(self.itos),):
            raise ValueError(f"counts has shape {self.counts.shape}, expected ({len(self.itos)},)")

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, tok: str) -> bool:
        return tok in self.stoi

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocab)
            and self.itos == other.itos
            and np.array_equal(self.counts, other.counts)
        )

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, tokens={int(self.counts.sum())})"

    def id(self, tok: str) -> int:
        """Id of ``tok``, :data:`UNK` if it is not in the vocabulary."""
        return self.stoi.get(tok, UNK)

    def ids(self, toks: Iterable[str]) -> np.ndarray:
        """int32 [n] ids of ``toks`` (unknown tokens map to :data:`UNK`)."""
        get = self.stoi.get
        return np.fromiter((get(t, UNK) for t in toks), dtype=np.int32)

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """Token strings of ``ids``."""
        itos = self.itos
        return [itos[int(i)] for i in ids]

    def to_json(self) -> dict:
        """A JSON-serialisable dict (``{"itos": [...], "counts": [...]}``)."""
        return {"itos": list(self.itos), "counts": self.counts.tolist()}

    @classmethod
    def from_json(cls, data: Mapping) -> Vocab:
        """Inverse of :meth:`to_json`."""
        counts = data.get("counts")
        return cls(data["itos"], None if counts is None else np.asarray(counts, dtype=np.int64))


def byte_symbol(b: int) -> str:
    """Display string of byte ``b``: the character for printable ASCII, else ``<0xNN>``."""
    return chr(b) if 0x20 <= b < 0x7F else f"<0x{b:02X}>"


def byte_vocab(counts: np.ndarray | None = None) -> Vocab:
    """The fixed byte vocabulary: 4 specials + 256 byte symbols (V = 260)."""
    return Vocab(list(SPECIALS) + [byte_symbol(b) for b in range(256)], counts)


def build_vocab(
    counts: Mapping[str, int] | Iterable[tuple[str, int]],
    min_count: int = 1,
    tokenizer: str = "word",
    special_counts: Mapping[str, int] | None = None,
) -> Vocab:
    """Build a vocabulary from token counts.

    Parameters
    ----------
    counts : mapping token -> count (or iterable of pairs)
        Occurrences of every non-special token.
    min_count : int
        Tokens seen fewer times map to ``<unk>`` (their counts are added to
        ``counts[UNK]``). Ignored by the ``byte`` tokenizer.
    tokenizer : {"word", "byte"}
    special_counts : mapping, optional
        Counts to record for the specials (e.g. ``{"<eos>": 12}``).

    Returns
    -------
    Vocab
        Specials first, then tokens by decreasing count, ties by string.
    """
    items = dict(counts.items() if isinstance(counts, Mapping) else counts)
    spec = np.zeros(N_SPECIALS, dtype=np.int64)
    for tok, c in (special_counts or {}).items():
        spec[SPECIALS.index(tok)] += int(c)
    if tokenizer == "byte":
        full = np.zeros(N_SPECIALS + 256, dtype=np.int64)
        full[:N_SPECIALS] = spec
        vocab = byte_vocab()
        for tok, c in items.items():
            full[vocab.id(tok)] += int(c)
        vocab.counts = full
        return vocab
    if tokenizer != "word":
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose from {TOKENIZERS}")
    kept = sorted(
        ((t, int(c)) for t, c in items.items() if c >= min_count and t not in SPECIALS),
        key=lambda tc: (-tc[1], tc[0]),
    )
    spec[UNK] += sum(int(c) for t, c in items.items() if c < min_count and t not in SPECIALS)
    itos = list(SPECIALS) + [t for t, _ in kept]
    cnt = np.concatenate([spec, np.array([c for _, c in kept], dtype=np.int64)])
    return Vocab(itos, cnt)


class Tokenizer:
    """Base class: split text into token strings and map them to ids."""

    name = ""

    def split(self, text: str) -> list[str]:
        """Token strings of ``text`` (no specials)."""
        raise NotImplementedError

    def encode(self, text: str, vocab: Vocab) -> np.ndarray:
        """int32 [n] ids of ``text`` under ``vocab``."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int], vocab: Vocab, specials: bool = False) -> str:
        """Text of ``ids``. ``<bos>/<eos>/<sep>`` are dropped unless ``specials``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        """Equal to a tokenizer of the same kind, or to its name (``tok == "word"``)."""
        if isinstance(other, Tokenizer):
            return self.name == other.name
        if isinstance(other, str):
            return self.name == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)


class WordTokenizer(Tokenizer):
    """Words, numbers and single punctuation characters, case kept."""

    name = "word"

    def split(self, text: str) -> list[str]:
        return WORD_RE.findall(text)

    def encode(self, text: str, vocab: Vocab) -> np.ndarray:
        return vocab.ids(WORD_RE.findall(text))

    def decode(self, ids: Iterable[int], vocab: Vocab, specials: bool = False) -> str:
        return detokenize(
            [vocab.itos[int(i)] for i in ids if specials or int(i) == UNK or int(i) >= N_SPECIALS]
        )


def detokenize(tokens: list[str]) -> str:
    """Join word tokens into readable text that re-splits into the same tokens.

    A space separates two tokens unless the right one is closing punctuation
    or the left one an opening bracket/quote (one character each), so two
    word tokens are always separated; two runs of the same symbol (``.`` and
    ``..``) are always separated too, or they would re-split as one run.
    """
    out: list[str] = []
    prev = ""
    for tok in tokens:
        merge = prev[-1:] == tok[:1] and tok[:1] in RUN_CHARS
        if out and (merge or not (tok in _CLOSERS or prev in _OPENERS)):
            out.append(" ")
        out.append(tok)
        prev = tok
    return "".join(out)


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: id = 4 + byte value; exact round trip."""

    name = "byte"

    def split(self, text: str) -> list[str]:
        return [byte_symbol(b) for b in text.encode("utf-8")]

    def encode(self, text: str, vocab: Vocab | None = None) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32) + N_SPECIALS

    def decode(self, ids: Iterable[int], vocab: Vocab | None = None, specials: bool = False) -> str:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        parts: list[str] = []
        start = 0
        # Specials interrupt the byte run; each run decodes on its own.
        for pos in np.flatnonzero(arr < N_SPECIALS).tolist() + [len(arr)]:
            run = arr[start:pos] - N_SPECIALS
            if len(run):
                parts.append(bytes(run.astype(np.uint8)).decode("utf-8", errors="replace"))
            if pos < len(arr) and (specials or arr[pos] == UNK):
                parts.append(SPECIALS[int(arr[pos])])
            start = pos + 1
        return "".join(parts)


def make_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called ``name`` (``"word"`` or ``"byte"``)."""
    if name == "word":
        return WordTokenizer()
    if name == "byte":
        return ByteTokenizer()
    raise ValueError(f"unknown tokenizer {name!r}; choose from {', '.join(TOKENIZERS)}")
