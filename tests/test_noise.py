"""Noise vectors, the exact bank and its k-means prototypes."""

from __future__ import annotations

import numpy as np

from core.keys import KeyStore
from core.noise import NoiseBank, align, aligned_events, assign, kmeans


def test_align_endpoints_and_monotone():
    assert align(1, 5).tolist() == [0]
    a = align(7, 3)
    assert a[0] == 0 and a[-1] == 2 and np.all(np.diff(a) >= 0)
    assert align(4, 4).tolist() == [0, 1, 2, 3]


def test_aligned_events_skip_empty_outputs():
    src, dst = aligned_events(np.array([4, 5, 6, 7]), np.array([0, 3, 4]),
                              np.array([8, 9]), np.array([0, 2, 2]))
    assert src.tolist() == [4, 5, 6] and dst.tolist() == [8, 8, 9]


def test_bank_noise_decodes_exactly_and_merges():
    keys = KeyStore(20, 8, 0).keys
    rng = np.random.default_rng(0)
    cur, nxt = rng.integers(0, 20, 300), rng.integers(0, 20, 300)
    bank = NoiseBank(20).add(cur, nxt)
    # e = k_cur − ν lands on k_next for every entry
    e = keys[bank.cur] - bank.vectors(keys)
    assert np.allclose(e, keys[bank.nxt], atol=1e-6)
    assert bank.count.sum() == 300
    assert np.all(bank.entry(cur, nxt) >= 0)
    seen = set(zip(cur.tolist(), nxt.tolist(), strict=True))
    unseen = next((a, b) for a in range(20) for b in range(20) if (a, b) not in seen)
    assert bank.entry(np.array([unseen[0]]), np.array([unseen[1]]))[0] == -1
    halves = NoiseBank(20).add(cur[:120], nxt[:120]).merge(NoiseBank(20).add(cur[120:], nxt[120:]))
    assert np.array_equal(halves.cur, bank.cur) and np.array_equal(halves.count, bank.count)
    # CSR: entries of token t are contiguous
    for t in range(20):
        assert np.all(bank.cur[bank.offsets[t]:bank.offsets[t + 1]] == t)


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    rng = np.random.default_rng(1)
    centres = rng.random((5, 4)).astype(np.float32) * 10
    X = (centres[rng.integers(0, 5, 500)] + rng.normal(0, 0.05, (500, 4))).astype(np.float32)
    C, lab = kmeans(X, 5, seed=3)
    C2, lab2 = kmeans(X, 5, seed=3)
    assert np.array_equal(C, C2) and np.array_equal(lab, lab2)
    # every true centre has a prototype within the noise level
    d = np.sqrt(((centres[:, None] - C[None]) ** 2).sum(-1)).min(1)
    assert d.max() < 0.1
    lab3, d2 = assign(X, C)
    assert np.array_equal(lab3, lab)


def test_residual_stages_reduce_error():
    keys = KeyStore(50, 16, 0).keys
    rng = np.random.default_rng(2)
    bank = NoiseBank(50).add(rng.integers(0, 50, 2000), rng.integers(0, 50, 2000))
    err = []
    for stages in (1, 2):
        bank.fit_prototypes(keys, P=16, seed=0, stages=stages)
        approx = bank.prototype_noise(np.arange(len(bank)))
        err.append(float(np.mean((approx - bank.vectors(keys)) ** 2)))
        assert bank.nearest_prototype(bank.vectors(keys)[:5]).shape == (5,)
    assert err[1] < err[0]
