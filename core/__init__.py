"""NoiseKey engine: random token keys, noise embeddings, a locality-preserving
cuckoo hash, the A/B/C machine and hierarchical pair-mean layers.

numpy + numba only; this package never imports Qt (``tests/test_layering.py``
checks it).
"""

__version__ = "0.1.0"

from core.kernel_cache import use_source_keyed_cache

# before any module of core defines a kernel: numba reads the folder then
use_source_keyed_cache()
