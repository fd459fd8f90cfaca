"""Where numba keeps the compiled kernels: one folder per version of the core sources.

Numba keys a cached kernel by its own source file's timestamp and size
only. A kernel inlines the helpers it calls, so after an update that edits
a helper (say :func:`core.jit.insert_bottomk`) but not the file of a kernel
calling it, numba would load that kernel compiled with the old helper: a
``git pull`` leaves unchanged files with their old timestamps, and an
editable install or a checkout under development then runs stale code
without a word. :func:`use_source_keyed_cache` (run when :mod:`core` is
imported, before any kernel is defined) points numba's cache at
``<base>/<source digest>``: any edit to a core file starts a fresh folder,
which the warm-up (:mod:`core.warmup`) fills in parallel processes.

``<base>`` is ``NUMBA_CACHE_DIR`` when the user set it, else the user cache
folder (``platformdirs``) ``noisekey/numba``. Child processes inherit the
keyed folder and keep it. Folders of other digests beyond the
:data:`KEEP` most recent are removed when a new one is made (about 5 MB
each).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import sys
from pathlib import Path

__all__ = ["KEEP", "source_digest", "use_source_keyed_cache"]

#: Digest folders kept beside the current one.
KEEP = 3
_DIGEST = re.compile(r"^[0-9a-f]{24}$")


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """BLAKE2b of every ``core`` source file's path and bytes (read once per process).

    What the model code is: numba's cache folder, the warm-up marker and the
    window's model cache (:func:`explorer.worker.model_cache_path`) are keyed
    by it, so an edited kernel compiles again and a new release trains anew.
    About 5 ms.
    """
    h = hashlib.blake2b(digest_size=12)
    root = Path(__file__).resolve().parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _prune(base: Path, keep: str) -> None:
    """Remove digest folders under ``base`` but ``keep`` and the KEEP most recent."""
    try:
        olds = [p for p in base.iterdir() if p.is_dir() and _DIGEST.match(p.name)
                and p.name != keep]
        olds.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for p in olds[KEEP:]:
        shutil.rmtree(p, ignore_errors=True)


def use_source_keyed_cache() -> Path | None:
    """Point numba's cache at ``<base>/<source digest>`` (see the module docstring).

    Returns the folder, or None where no folder could be made (numba then
    caches as it would by default).
    """
    digest = source_digest()
    given = os.environ.get("NUMBA_CACHE_DIR", "")
    if given and Path(given).name == digest:
        folder = Path(given)  # a child process: the parent keyed it already
    else:
        if given:
            base = Path(given)
        else:
            from platformdirs import user_cache_dir

            base = Path(user_cache_dir("noisekey")) / "numba"
        folder = base / digest
        try:
            fresh = not folder.is_dir()
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        if fresh:
            _prune(base, digest)
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:  # numba imported before core: set it where it reads it
        numba_config.CACHE_DIR = str(folder)
    return folder
