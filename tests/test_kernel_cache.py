"""numba's cache folder is keyed by the core sources (:mod:`core.kernel_cache`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core import kernel_cache
from core.kernel_cache import source_digest


def _cache_dir_in_child(env: dict) -> str:
    code = "import numba, core.jit; print(numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    return out.stdout.strip()


def test_numba_caches_under_the_source_digest_and_children_keep_the_folder(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    keyed = tmp_path / source_digest()
    assert _cache_dir_in_child(env) == str(keyed)  # numba imported after core keyed it
    env["NUMBA_CACHE_DIR"] = str(keyed)  # what a child of that process inherits
    assert _cache_dir_in_child(env) == str(keyed)
    assert keyed.is_dir()


def test_numba_imported_first_still_gets_the_keyed_folder(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = ("import numba; import core.jit; print(numba.core.config.CACHE_DIR); "
            "print(core.jit.insert_bottomk.stats.cache_path)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    config_dir, kernel_dir = out.stdout.split()
    assert config_dir == str(tmp_path / source_digest())
    assert kernel_dir.startswith(config_dir)


def test_a_new_digest_prunes_all_but_the_most_recent_folders(tmp_path, monkeypatch):
    import numba

    # this process's kernels stay where they are (restored after the test)
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", numba.core.config.CACHE_DIR)
    old = [tmp_path / f"{i:024x}" for i in range(6)]
    for i, p in enumerate(old):
        p.mkdir()
        os.utime(p, (1_000_000 + i, 1_000_000 + i))
    other = tmp_path / "not-a-digest"
    other.mkdir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    folder = kernel_cache.use_source_keyed_cache()
    assert folder == tmp_path / source_digest()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted([source_digest(), "not-a-digest"]
                          + [p.name for p in old[-kernel_cache.KEEP:]])
