"""Tokenizers and vocabularies."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tokenize import (
    BOS,
    EOS,
    SEP,
    SPECIALS,
    UNK,
    Vocab,
    build_vocab,
    byte_vocab,
    detokenize,
    make_tokenizer,
)


def test_specials_ids():
    assert SPECIALS == ("<bos>", "<eos>", "<sep>", "<unk>")
    assert (BOS, EOS, SEP, UNK) == (0, 1, 2, 3)


def test_word_split_keeps_case_and_punctuation():
    tok = make_tokenizer("word")
    assert tok.split("Hello, World! x2 = 3.5") == [
        "Hello", ",", "World", "!", "x2", "=", "3", ".", "5"]
    assert tok.name == "word" and tok == "word" and tok != "byte"


def test_word_split_keeps_symbol_runs_whole():
    tok = make_tokenizer("word")
    assert tok.split("Heading\n=======\n>>> f(**kw) ... x == 1 -- ((y))") == [
        "Heading", "=======", ">>>", "f", "(", "**", "kw", ")", "...", "x", "==", "1", "--",
        "(", "(", "y", ")", ")"]
    assert detokenize(["x", ".", "."]) == "x. ."  # never merged into the run ".."


def test_build_vocab_order_min_count_and_unk_counts():
    v = build_vocab({"b": 2, "a": 2, "c": 5, "rare": 1, "odd": 1}, min_count=2)
    assert v.itos == list(SPECIALS) + ["c", "a", "b"]
    assert v.counts.tolist() == [0, 0, 0, 2, 5, 2, 2]
    assert v.id("rare") == UNK and v.id("c") == 4
    assert len(v) == 7


def test_vocab_json_round_trip():
    v = build_vocab({"x": 3, "y": 1}, special_counts={"<eos>": 4})
    w = Vocab.from_json(v.to_json())
    assert w == v and w.counts[EOS] == 4


def test_word_encode_unknown_maps_to_unk():
    v = build_vocab({"a": 1, "b": 1})
    ids = make_tokenizer("word").encode("a b c", v)
    assert ids.dtype == np.int32
    assert ids.tolist() == [v.id("a"), v.id("b"), UNK]


def test_word_decode_drops_structural_specials_keeps_unk():
    v = build_vocab({"hi": 1, ".": 1})
    tok = make_tokenizer("word")
    ids = [BOS, v.id("hi"), UNK, v.id("."), EOS]
    assert tok.decode(ids, v) == "hi <unk>."
    assert tok.decode(ids, v, specials=True) == "<bos> hi <unk>. <eos>"


def test_detokenize_is_readable():
    assert detokenize(["f", "(", "x", ")", ",", "and", "y", "."]) == "f (x), and y."


def test_byte_vocab_is_fixed():
    v = byte_vocab()
    assert len(v) == 260 and v.itos[:4] == list(SPECIALS)
    assert v.id("A") == 4 + 65 and v.id("<0x0A>") == 4 + 10
    assert build_vocab({"A": 3}, tokenizer="byte", min_count=99).counts[4 + 65] == 3


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_round_trip_exact(text):
    tok = make_tokenizer("byte")
    ids = tok.encode(text, byte_vocab())
    assert ids.dtype == np.int32 and len(ids) == len(text.encode("utf-8"))
    assert ids.min(initial=4) >= 4 and ids.max(initial=4) < 260
    assert tok.decode(ids, byte_vocab()) == text
    assert len(tok.split(text)) == len(ids)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_word_encode_decode_keeps_tokens(text):
    tok = make_tokenizer("word")
    toks = tok.split(text)
    v = build_vocab({t: 1 for t in toks})
    ids = tok.encode(text, v)
    assert v.tokens(ids) == toks
    assert tok.split(tok.decode(ids, v)) == toks


@given(st.lists(st.sampled_from(["a", "bb", "(", ")", ".", ",", "'", "9", "é", "_x", "..", "=",
                                 "==", ">>>", '"', "''", "-"]), max_size=30))
def test_detokenize_resplits(tokens):
    assert make_tokenizer("word").split(detokenize(tokens)) == tokens
