"""Random token keys.

Every token ``t`` gets a key ``k_t ~ U[0, 1)^d`` (float32), drawn from
``numpy.random.default_rng(seed)`` row by row. Rows are generated in id order
from one stream, so the keys of the first ``V`` tokens do not depend on how
many tokens follow: growing a vocabulary keeps the existing keys (tested).
"""

from __future__ import annotations

import numpy as np


class KeyStore:
    """One random key per vocabulary id.

    Parameters
    ----------
    vocab_size : int
        V, number of keys.
    dim : int
        d, key dimension (default 32).
    seed : int
        Seed of the generator; equal seeds give equal keys.

    Attributes
    ----------
    keys : float32 [V, d]
        Uniform in [0, 1), C-contiguous.
    """

    def __init__(self, vocab_size: int, dim: int = 32, seed: int = 0) -> None:
        if vocab_size < 0 or dim <= 0:
            raise ValueError(f"need vocab_size >= 0 and dim > 0, got {vocab_size}, {dim}")
        self.vocab_size = int(vocab_size)
        self.dim = int(dim)
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        self.keys = rng.random((self.vocab_size, self.dim), dtype=np.float32)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"KeyStore(vocab_size={self.vocab_size}, dim={self.dim}, seed={self.seed})"

    def __getitem__(self, ids) -> np.ndarray:
        """Keys of ``ids``: float32 [d] for an int, [n, d] for an array."""
        return self.keys[ids]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for :func:`core.modelfile.save` (``keys``)."""
        return {"keys": self.keys}

    def settings(self) -> dict:
        """JSON settings that rebuild these keys exactly."""
        return {"vocab_size": self.vocab_size, "dim": self.dim, "seed": self.seed}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], seed: int = 0) -> KeyStore:
        """A store holding the saved ``arrays["keys"]`` as they are."""
        keys = np.ascontiguousarray(arrays["keys"], dtype=np.float32)
        if keys.ndim != 2:
            raise ValueError(f"keys must be 2-D, got shape {keys.shape}")
        store = cls.__new__(cls)
        store.vocab_size, store.dim = keys.shape
        store.seed = int(seed)
        store.keys = keys
        return store
