"""core.metric against a plain numpy reference (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.metric import (
    Metric,
    breakdown,
    digits,
    dist,
    distance,
    distances,
    pairwise,
)


def ref_digits(x: np.ndarray, D: int) -> np.ndarray:
    """Digits of clip(x, 0, 1-1e-7): floor(x * 10**k) mod 10, float64."""
    v = np.clip(np.asarray(x, np.float64), 0.0, 1.0 - 1e-7)
    return np.stack([np.floor(v * 10.0**k).astype(np.int64) % 10 for k in range(1, D + 1)], -1)


def ref_distance(a: np.ndarray, b: np.ndarray, m: Metric) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if m.name == "l2":
        return float(np.sqrt(((a - b) ** 2).sum()))
    if m.name == "l1":
        return float(np.abs(a - b).sum())
    da, db = ref_digits(a, m.D), ref_digits(b, m.D)
    w = float(m.f) ** -np.arange(m.D, dtype=np.float64)
    diff = np.abs(da - db)
    return float(((diff != 0) + m.lam * diff / 9.0).dot(w).sum())


coords = st.floats(-0.5, 1.5, width=32, allow_nan=False)
metrics = st.builds(
    Metric,
    name=st.sampled_from(["l2", "l1", "digit"]),
    f=st.floats(1.5, 20.0),
    lam=st.floats(0.0, 3.0),
    D=st.integers(1, 6),
)


@settings(max_examples=60, deadline=None)
@given(d=st.integers(1, 12), data=st.data(), m=metrics)
def test_distance_matches_reference(d, data, m):
    a = data.draw(hnp.arrays(np.float32, d, elements=coords))
    b = data.draw(hnp.arrays(np.float32, d, elements=coords))
    got = distance(a, b, m)
    assert got == pytest.approx(ref_distance(a, b, m), rel=1e-5, abs=1e-5)
    assert distance(a, a, m) == 0.0
    assert got == pytest.approx(distance(b, a, m), rel=1e-6)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 20), d=st.integers(1, 8), data=st.data(), m=metrics)
def test_one_to_many_and_many_to_many(n, d, data, m):
    X = data.draw(hnp.arrays(np.float32, (n, d), elements=coords))
    Q = data.draw(hnp.arrays(np.float32, (3, d), elements=coords))
    P = pairwise(Q, X, m)
    assert P.shape == (3, n) and P.dtype == np.float32
    for i in range(3):
        ref = np.array([ref_distance(Q[i], x, m) for x in X])
        np.testing.assert_allclose(P[i], ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(distances(Q[i], X, m), P[i])


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 10), data=st.data(), m=metrics)
def test_breakdown_sums_to_distance(d, data, m):
    a = data.draw(hnp.arrays(np.float32, d, elements=coords))
    b = data.draw(hnp.arrays(np.float32, d, elements=coords))
    bd = breakdown(a, b, m)
    assert bd.shape == (d, m.D)
    total = float(bd.astype(np.float64).sum())
    expect = distance(a, b, m) ** 2 if m.name == "l2" else distance(a, b, m)
    assert total == pytest.approx(expect, rel=1e-4, abs=1e-4)
    if m.name != "digit":
        assert not bd[:, 1:].any()


def test_digit_examples():
    m = Metric("digit", f=10.0, lam=1.0, D=4)
    # 0.1234 vs 0.1239: only digit 4 differs by 5 -> 10^-3 * (1 + 5/9)
    a = np.array([0.12345], np.float32)
    b = np.array([0.12395], np.float32)
    assert distance(a, b, m) == pytest.approx(1e-3 * (1 + 5 / 9), rel=1e-5)
    # leftmost digit dominates: 0.1 vs 0.9 costs more than 0.19 vs 0.11
    assert distance([0.1], [0.9], m) > distance([0.19], [0.11], m)
    # clipping: values >= 1 read as 0.9999999, negatives as 0
    np.testing.assert_array_equal(digits([[1.5, -2.0]], 4)[0], [[9, 9, 9, 9], [0, 0, 0, 0]])
    assert distance([1.5], [0.99999], m) == 0.0


def test_metric_validation_and_kernel():
    with pytest.raises(ValueError, match="unknown metric"):
        Metric("cosine")
    with pytest.raises(ValueError):
        Metric("digit", D=0)
    assert [Metric(n).code for n in ("l2", "l1", "digit")] == [0, 1, 2]
    a = np.array([0.25, 0.5], np.float32)
    b = np.array([0.5, 0.25], np.float32)
    assert dist(a, b, 1, 10.0, 1.0, 4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="dimension"):
        distance(a, np.zeros(3), "l2")
