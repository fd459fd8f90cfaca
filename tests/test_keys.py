"""Random token keys."""

from __future__ import annotations

import numpy as np
import pytest

from core.keys import KeyStore


def test_shape_dtype_range():
    ks = KeyStore(500, dim=16, seed=3)
    assert ks.keys.shape == (500, 16) and ks.keys.dtype == np.float32
    assert ks.keys.flags.c_contiguous
    assert ks.keys.min() >= 0.0 and ks.keys.max() < 1.0
    # Uniform: mean near 1/2, each decile holds about a tenth.
    assert abs(ks.keys.mean() - 0.5) < 0.01
    hist = np.histogram(ks.keys, bins=10, range=(0, 1))[0] / ks.keys.size
    assert np.all(np.abs(hist - 0.1) < 0.01)


def test_reproducible_and_seed_dependent():
    assert np.array_equal(KeyStore(50, 8, seed=1).keys, KeyStore(50, 8, seed=1).keys)
    assert not np.array_equal(KeyStore(50, 8, seed=1).keys, KeyStore(50, 8, seed=2).keys)


def test_growing_vocabulary_keeps_existing_keys():
    assert np.array_equal(KeyStore(100, 32, 7).keys, KeyStore(300, 32, 7).keys[:100])


def test_default_dim_and_indexing():
    ks = KeyStore(10)
    assert ks.dim == 32 and len(ks) == 10
    assert np.array_equal(ks[3], ks.keys[3]) and ks[np.array([1, 2])].shape == (2, 32)


def test_arrays_round_trip():
    ks = KeyStore(20, 4, seed=5)
    back = KeyStore.from_arrays(ks.to_arrays(), seed=5)
    assert np.array_equal(back.keys, ks.keys) and back.settings() == ks.settings()


def test_bad_arguments():
    with pytest.raises(ValueError):
        KeyStore(10, dim=0)
