"""Corpus loaders: formats, statistics, honest splits, bad input."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from bad_inputs import EXPECTED, make
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.corpus import (
    Cancelled,
    Corpus,
    CorpusError,
    concat,
    default_corpus_path,
    load_corpus,
)
from core.tokenize import EOS, SEP, UNK, make_tokenizer

TEXT = """The first line of one.
The second line of one.
The third line.

A lone paragraph here.


Last paragraph, line one.
Last paragraph, line two.
"""


@pytest.fixture
def txt(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(TEXT)
    return p


def _pairs(c: Corpus) -> list[tuple[str, str]]:
    return [c.pair_text(i) for i in range(c.n_pairs)]


def test_txt_paragraphs_and_line_pairs(txt):
    c = load_corpus(txt)
    assert c.n_docs == 3 and c.tokenizer == "word"
    assert np.count_nonzero(c.stream == EOS) == 3 and c.stream[-1] == EOS
    assert _pairs(c) == [
        ("The first line of one.", "The second line of one."),
        ("The second line of one.", "The third line."),
        ("Last paragraph, line one.", "Last paragraph, line two."),
    ]
    tok = make_tokenizer("word")
    assert c.vocab.tokens(c.stream[c.stream != EOS]) == tok.split(TEXT)
    s = c.stats
    assert (s.files, s.lines, s.paragraphs, s.pairs) == (1, 9, 3, 3)
    assert s.tokens == len(tok.split(TEXT)) and s.oov_rate == 0.0 and s.replacements == 0
    # The vocabulary counts are the stream counts.
    assert c.vocab.counts[EOS] == 3
    assert c.vocab.counts[c.vocab.id("line")] == 5
    assert c.in_ids.dtype == np.int32 and c.in_offsets.dtype == np.int64
    assert len(c.in_offsets) == len(c.out_offsets) == c.n_pairs + 1


def test_pair_spans_cover_their_lines(txt):
    c = load_corpus(txt)
    for i in range(c.n_pairs):
        x, y = c.pair(i)
        span = c.stream[c.pair_start[i] : c.pair_end[i]]
        assert np.array_equal(span, np.concatenate([x, y]))


def test_tsv_csv_jsonl(tmp_path):
    (tmp_path / "a.tsv").write_text("input\toutput\nhello there\tgeneral\tkenobi\n\nbye\tnow\n")
    (tmp_path / "b.csv").write_text('prompt,response\n"one, two","three\nfour"\nfive,six\n')
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"prompt": "p1", "response": "r1"}) + "\n\n"
        + json.dumps({"input": "i2", "output": "o2", "extra": 1}) + "\n")
    c = load_corpus(tmp_path)
    assert _pairs(c) == [
        ("hello there", "general kenobi"),  # split on the first tab only
        ("bye", "now"),
        ("one, two", "three four"),
        ("five", "six"),
        ("p1", "r1"),
        ("i2", "o2"),
    ]
    # Pairs-file records are written to the stream as input <sep> output <eos>.
    assert c.vocab.tokens(c.document(0)) == [
        "hello", "there", "<sep>", "general", "kenobi", "<eos>"]
    assert np.count_nonzero(c.stream == SEP) == 6 and np.count_nonzero(c.stream == EOS) == 6
    assert c.stats.files == 3 and c.stats.paragraphs == 0 and c.stats.pairs == 6
    assert c.stats.lines == 11
    assert c.pair_source(2).endswith("b.csv")


def test_folder_recursive_sorted_hidden_skipped(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.txt").write_text("zed\n")
    (tmp_path / "a.txt").write_text("ay\n")
    (tmp_path / ".hidden.txt").write_text("hidden\n")
    (tmp_path / "notes.md").write_text("ignored in folders\n")
    c = load_corpus(tmp_path)
    assert [f.rsplit("/", 1)[-1] for f in c.files] == ["a.txt", "z.txt"]
    assert "hidden" not in c.vocab and "ignored" not in c.vocab
    md = load_corpus(tmp_path / "notes.md")  # named explicitly: read as running text
    assert "ignored" in md.vocab


def test_samples_load(samples):
    c = load_corpus(samples)
    s = c.stats
    assert s.files == 2 and s.pairs > 300 and s.tokens > 4000 and s.paragraphs > 10
    assert ("abs", "Return the absolute value of the argument.") in _pairs(c)


def test_min_count_maps_rare_tokens_to_unk(txt):
    c = load_corpus(txt, min_count=2)
    toks = make_tokenizer("word").split(TEXT)
    rare = {t for t in toks if toks.count(t) < 2}
    assert all(t not in c.vocab for t in rare)
    n_unk = sum(toks.count(t) for t in rare)
    assert np.count_nonzero(c.stream == UNK) == n_unk == c.vocab.counts[UNK]
    assert c.stats.oov_rate == pytest.approx(n_unk / len(toks))
    assert np.count_nonzero(c.in_ids == UNK) > 0


def test_byte_tokenizer_stream_is_the_text(txt):
    c = load_corpus(txt, tokenizer="byte")
    assert len(c.vocab) == 260 and c.tokenizer == "byte"
    tok = make_tokenizer("byte")
    docs = [tok.decode(d, c.vocab) for d in c.documents()]
    assert docs == [p.strip() for p in TEXT.split("\n\n") if p.strip()]
    assert c.pair_text(0) == ("The first line of one.", "The second line of one.")
    assert c.stats.tokens == sum(len(d.encode()) for d in docs)


def test_non_utf8_replaced_and_counted(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("café au lait\nnaïve\n".encode("latin-1") + "ok \ufffd\n".encode())
    c = load_corpus(p)
    assert c.stats.replacements == 2  # the genuine U+FFFD is not counted
    assert "caf\ufffd" in c.vocab or "\ufffd" in c.vocab


def test_utf8_bom_dropped(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfhello world\n")
    assert load_corpus(p).vocab.itos[4:] == ["hello", "world"]


def test_split_running_text_by_position():
    c = load_corpus(default_corpus_path())
    train, test = c.split(0.9)
    n_text = np.count_nonzero(c.stream != EOS)
    n_train = np.count_nonzero(train.stream != EOS)
    assert abs(n_train / n_text - 0.9) < 0.002
    # The two parts are the stream cut in two (up to the remapping of test-only words).
    assert len(train.stream) + len(test.stream) == len(c.stream)
    tok_train = c.vocab.tokens(c.stream[: len(train.stream)])
    assert train.vocab.tokens(train.stream) == tok_train
    # Vocabulary counted on the training part only.
    assert np.array_equal(train.vocab.counts, np.bincount(train.stream, minlength=len(train.vocab)))
    assert test.vocab is train.vocab
    assert 0.0 < test.stats.oov_rate < 0.1 and train.stats.oov_rate == 0.0
    assert c.n_pairs - 2 <= train.n_pairs + test.n_pairs <= c.n_pairs
    for part in (train, test):
        for i in range(0, part.n_pairs, 97):
            x, y = part.pair(i)
            span = part.stream[part.pair_start[i] : part.pair_end[i]]
            assert np.array_equal(span, np.concatenate([x, y]))


def test_split_pairs_by_seeded_permutation_no_leak(samples):
    c = load_corpus(samples / "builtins.tsv")
    train, test = c.split(0.8, seed=1)
    assert train.n_pairs + test.n_pairs == c.n_pairs
    assert train.n_pairs == round(0.8 * c.n_pairs)
    tr, te = set(_pairs(train)), set(_pairs(test))
    assert not tr & te
    # The stream of the training part holds only training records.
    assert np.count_nonzero(train.stream == EOS) == train.n_pairs
    again = c.split(0.8, seed=1)[1]
    other = c.split(0.8, seed=2)[1]
    assert _pairs(again) == _pairs(test) and _pairs(other) != _pairs(test)
    # Not simply the file order.
    assert _pairs(test) != _pairs(c)[train.n_pairs :]


def test_split_mixed_corpus_consistent(samples):
    c = load_corpus(samples)
    train, test = c.split(0.9, seed=0)
    # a cut inside a line drops the two pairs that share it (as output, then as input)
    assert train.stats.pairs + test.stats.pairs >= c.n_pairs - 2
    assert c.n_pairs - 2 <= train.n_pairs + test.n_pairs <= c.n_pairs
    tr, te = set(_pairs(train)), set(_pairs(test))
    assert not tr & te
    tsv = load_corpus(samples / "builtins.tsv")
    assert 0 < len(te & set(_pairs(tsv))) < tsv.n_pairs // 2  # file pairs are in both parts
    for part in (train, test):
        assert part.stats.lines > 0 and part.stats.tokens > 0
    assert train.stats.lines + test.stats.lines >= c.stats.lines


def test_split_byte_keeps_fixed_vocab(samples):
    c = load_corpus(samples, tokenizer="byte")
    train, test = c.split(0.5)
    assert len(train.vocab) == 260 and test.vocab is train.vocab
    assert test.stats.oov_rate == 0.0


def test_shards_and_concat_round_trip(samples):
    c = load_corpus(samples)
    shards = c.shards(3)
    assert len(shards) == 3 and all(s.n_docs > 0 for s in shards)
    back = concat(shards)
    assert np.array_equal(back.stream, c.stream)
    assert np.array_equal(back.in_ids, c.in_ids) and np.array_equal(back.out_offsets, c.out_offsets)
    assert np.array_equal(back.pair_start, c.pair_start) and back.vocab.itos == c.vocab.itos


def test_concat_merges_vocabularies(tmp_path):
    (tmp_path / "a.txt").write_text("cat dog\n")
    (tmp_path / "b.txt").write_text("dog emu\n")
    a, b = load_corpus(tmp_path / "a.txt"), load_corpus(tmp_path / "b.txt")
    c = concat([a, b])
    assert c.vocab.itos[4] == "dog" and c.vocab.counts[4] == 2
    assert c.vocab.tokens(c.stream) == ["cat", "dog", "<eos>", "dog", "emu", "<eos>"]
    with pytest.raises(ValueError):
        concat([a, load_corpus(tmp_path / "b.txt", tokenizer="byte")])


def test_with_vocab_encodes_unseen_words_as_unk(tmp_path):
    (tmp_path / "a.txt").write_text("cat dog\n")
    (tmp_path / "b.txt").write_text("dog emu\n")
    a, b = load_corpus(tmp_path / "a.txt"), load_corpus(tmp_path / "b.txt")
    bb = b.with_vocab(a.vocab)
    assert bb.vocab is a.vocab and bb.stream.tolist() == [a.vocab.id("dog"), UNK, EOS]
    assert bb.stats.oov_rate == 0.5


def test_default_corpus():
    c = load_corpus(default_corpus_path())
    s = c.stats
    assert 90_000 < s.tokens < 130_000 and s.paragraphs == 79 and s.replacements == 0


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_bad_input_is_one_clear_error(tmp_path, kind):
    path = make(tmp_path, kind)
    line, words = EXPECTED[kind]
    with pytest.raises(CorpusError) as err:
        load_corpus(path)
    e = err.value
    assert e.path == str(path) and e.line == line and words in e.reason
    assert str(e) == (f"{path}:{line}: {e.reason}" if line else f"{path}: {e.reason}")
    assert "\n" not in str(e)
    assert pickle.loads(pickle.dumps(e)).reason == e.reason  # crosses thread/process queues


def test_bad_file_inside_folder_is_named(tmp_path):
    (tmp_path / "good.txt").write_text("fine text\n")
    bad = make(tmp_path, "tsv_one_column")
    with pytest.raises(CorpusError) as err:
        load_corpus(tmp_path)
    assert err.value.path == str(bad)


def test_bad_arguments(txt):
    with pytest.raises(ValueError):
        load_corpus(txt, tokenizer="chars")
    with pytest.raises(ValueError):
        load_corpus(txt, min_count=0)


def test_large_file_streams_with_progress_and_cancel(tmp_path):
    p = tmp_path / "big.txt"
    para = ("All work and no play makes Jack a dull boy.\n" * 4 + "\n").encode()
    with open(p, "wb") as f:
        for _ in range(3 * 2**20 // len(para)):
            f.write(para)
    size = p.stat().st_size
    seen: list[tuple[str, float, dict | None]] = []
    c = load_corpus(p, progress=lambda s, fr, info=None: seen.append((s, fr, info)))
    fracs = [fr for s, fr, _ in seen if s == "reading corpus"]
    assert len(fracs) > 10 and fracs == sorted(fracs) and fracs[-1] == 1.0
    assert seen[-1][0] == "building vocabulary"
    assert max(info["bytes"] for s, _, info in seen if info) == size
    assert c.stats.bytes == size and c.stats.pairs == 3 * c.n_docs

    state = {"fraction": 0.0, "polls": 0}

    def progress(stage, fraction, info=None):
        state["fraction"] = fraction

    def cancel():
        state["polls"] += 1
        return state["fraction"] >= 0.5

    with pytest.raises(Cancelled):
        load_corpus(p, progress=progress, cancel=cancel)
    assert 0.5 <= state["fraction"] < 0.6 and state["polls"] > 5


def test_overlong_line_refused(tmp_path, monkeypatch):
    import core.readers as cc

    monkeypatch.setattr(cc, "MAX_LINE", 1000)
    p = tmp_path / "long.txt"
    p.write_text("short line\n" + "word " * 400 + "\nend\n")
    with pytest.raises(CorpusError) as err:
        load_corpus(p)
    assert err.value.line == 2 and "longer than" in err.value.reason


def test_shipped_corpora_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "resources" / "corpora"
    c = load_corpus(folder)
    names = sorted(Path(f).name for f in c.files)
    assert names == ["fortunes.txt", "wordnet_glosses.tsv"]  # license files are not read
    s = c.stats
    assert s.pairs > 15_000 and s.paragraphs > 500 and s.replacements == 0
    firsts = c.in_ids[c.in_offsets[:-1]]
    cands = np.flatnonzero(firsts == c.vocab.id("dog"))
    dog = [c.pair_text(i) for i in cands if c.pair_text(i)[0] == "dog (noun)"]
    assert len(dog) == 1 and "domestic" in dog[0][1]


_FIELDS = ("stream", "doc_offsets", "doc_kind", "doc_file", "doc_lines", "doc_repl", "in_ids",
           "in_offsets", "out_ids", "out_offsets", "pair_doc", "pair_start", "pair_end")

_line = st.one_of(
    st.just(""), st.just("   "), st.just("\t \r"),
    st.lists(st.sampled_from([*"ab .,é\t(", "xyz", "\u00a0", "\r"]), max_size=8).map("".join),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(_line, min_size=1, max_size=25),
    chunk=st.integers(1, 40),
    final_newline=st.booleans(),
    junk=st.booleans(),
)
def test_chunked_word_reader_equals_line_reader(tmp_path_factory, monkeypatch, lines, chunk,
                                                final_newline, junk):
    """The vectorised .txt reader gives the per-line reader's arrays exactly."""
    import core.readers as cc

    data = "\n".join(lines).encode() + (b"\n" if final_newline else b"")
    if junk:
        data = data.replace(b"a", b"\xff", 2)
    if not data.strip():
        return
    p = tmp_path_factory.mktemp("eq") / "t.txt"
    p.write_bytes(data)
    monkeypatch.setattr(cc, "CHUNK", chunk)
    monkeypatch.setattr(cc, "_LINE_BY_LINE", True)
    try:
        slow = load_corpus(p)
    except CorpusError as e:
        slow = e
    monkeypatch.setattr(cc, "_LINE_BY_LINE", False)
    try:
        fast = load_corpus(p)
    except CorpusError as e:
        fast = e
    if isinstance(slow, CorpusError):
        assert isinstance(fast, CorpusError) and str(fast) == str(slow)
        return
    for name in _FIELDS:
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    assert fast.vocab == slow.vocab and fast.stats == slow.stats


def test_chunked_reader_on_shipped_text(monkeypatch):
    import core.readers as cc

    monkeypatch.setattr(cc, "CHUNK", 4096)  # paragraphs cross many chunk boundaries
    fast = load_corpus(default_corpus_path())
    monkeypatch.setattr(cc, "_LINE_BY_LINE", True)
    slow = load_corpus(default_corpus_path())
    for name in _FIELDS:
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    assert fast.vocab == slow.vocab


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_split_partitions_stream_and_pairs(samples, fraction):
    c = load_corpus(samples)
    train, test = c.split(fraction, seed=3)
    assert len(train.stream) + len(test.stream) == len(c.stream)
    assert train.n_docs + test.n_docs in (c.n_docs, c.n_docs + 1)  # one paragraph may be cut
    assert c.n_pairs - 2 <= train.n_pairs + test.n_pairs <= c.n_pairs
    if fraction == 0.0:
        assert train.n_pairs == 0 and len(train.vocab) == 4
        assert test.stats.oov_rate == 1.0
    if fraction == 1.0:
        assert test.n_pairs == 0 and len(test.stream) == 0 and train.vocab.itos == c.vocab.itos
    with pytest.raises(ValueError):
        c.split(1.5)


def test_jsonl_text_reads_as_the_same_running_text_and_more_pair_fields(tmp_path):
    """``{"text": ...}`` lines are running text: the corpus a .txt of the same blocks gives."""
    docs = ["First line here.\nSecond line, then\n\n  indented third.", "One more document."]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d, "id": i}) + "\n"
                                              for i, d in enumerate(docs)))
    (tmp_path / "b.txt").write_text("\n\n".join(docs) + "\n")
    for tok in ("word", "byte"):
        a = load_corpus(tmp_path / "a.jsonl", tokenizer=tok)
        t = load_corpus(tmp_path / "b.txt", tokenizer=tok)
        assert a.vocab.tokens(a.stream) == t.vocab.tokens(t.stream)
        assert [tuple(map(a.vocab.tokens, a.pair(i))) for i in range(a.n_pairs)] == \
            [tuple(map(t.vocab.tokens, t.pair(i))) for i in range(t.n_pairs)]
        assert a.n_docs == t.n_docs == 3
    (tmp_path / "c.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n"
                                      + json.dumps({"source": "s", "target": "t"}) + "\n")
    assert _pairs(load_corpus(tmp_path / "c.jsonl")) == [("q", "a"), ("s", "t")]
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": " \n \n"}) + "\n")
    with pytest.raises(CorpusError, match=r"d\.jsonl.*1.*empty text"):
        load_corpus(tmp_path / "d.jsonl")


@pytest.mark.parametrize("ext", ["gz", "bz2", "xz"])
def test_compressed_corpora_read_as_the_plain_file(tmp_path, ext):
    """``a.txt.gz`` is running text, ``b.tsv.xz`` pairs: the corpus of the plain files, streamed."""
    import bz2
    import gzip
    import lzma

    opener = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}[ext]
    text = "Two lines\nof a paragraph.\n\nAnother one.\n" * 500
    pairs = "input\toutput\nhello\tworld\nbye\tnow\n"
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    (plain / "sub").mkdir(parents=True)
    (packed / "sub").mkdir(parents=True)
    (plain / "sub" / "a.txt").write_text(text)
    (plain / "b.tsv").write_text(pairs)
    with opener(packed / "sub" / f"a.txt.{ext}", "wt") as f:
        f.write(text)
    with opener(packed / f"b.tsv.{ext}", "wt") as f:
        f.write(pairs)
    a, b = load_corpus(plain), load_corpus(packed)  # folders: the packed ones are found too
    assert a.vocab.tokens(a.stream) == b.vocab.tokens(b.stream)  # the same files, in order
    assert a.n_pairs == b.n_pairs and a.stats.lines == b.stats.lines
    seen = []
    load_corpus(packed / "sub" / f"a.txt.{ext}", progress=lambda s, f, i=None: seen.append(f))
    assert max(seen) == 1.0 and all(0.0 <= x <= 1.0 for x in seen)


def test_damaged_compressed_corpora_are_one_line(tmp_path):
    import gzip

    data = gzip.compress(("words and more words\n" * 20000).encode())
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(data[: len(data) // 2])
    fake = tmp_path / "fake.tsv.gz"
    fake.write_text("plain text, not gzip\n")
    for path, reason in ((cut, "cut short"), (fake, "damaged")):
        with pytest.raises(CorpusError) as info:
            load_corpus(path)
        msg = str(info.value)
        assert path.name in msg and reason in msg and "\n" not in msg
