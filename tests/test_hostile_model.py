"""Crafted and damaged model files, long prompts and odd ``--out`` targets.

Every bad model file must end as one ``noisekey: error: FILE: reason`` line
and exit 2, before any kernel sees it: no traceback, no signal. The CLI runs
in a subprocess so that a crash would show as a signal, not kill the tests.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.model import Model
from core.modelfile import ModelFileError, OutPathError, save
from tests.cli_helpers import CLI, assert_refused, cli
from tests.conftest import SAMPLES

SMALL = ["--dim", "16", "--prototypes", "16", "-q"]
# the same, printing the peak RSS (KiB) as the last line of stderr: the child's own
# (core.scale.peak_rss_mb), not ru_maxrss, which starts at this process's size
CLI_RSS = ("import atexit, sys; from core.scale import peak_rss_mb; atexit.register(lambda: "
           "print(int(peak_rss_mb() * 1024), file=sys.stderr)); " + CLI)




@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small trained model (pairs, prompt memory and signatures on): (path, arrays, meta)."""
    out = tmp_path_factory.mktemp("hostile") / "m.npz"
    r = cli("train", SAMPLES / "builtins.tsv", "--out", out, *SMALL, timeout=600)
    assert r.returncode == 0, r.stderr
    with np.load(out, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    return out, arrays, meta


def write(path: Path, arrays: dict, meta: dict) -> Path:
    blob = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez_compressed(path, __meta__=blob, **arrays)
    return path


def _set(name, fn):
    def edit(a, m):
        a[name] = fn(a[name].copy(), a, m)
    return edit


def _fill(v):
    def f(x, a, m):
        x[...] = v
        return x
    return f


def _meta(fn):
    def edit(a, m):
        fn(m)
    return edit


V_OF = lambda m: len(m["vocab"]["itos"])  # noqa: E731

CASES = {
    # out-of-range and negative ids in every id array
    "win_rows_1e6": ("win_rows", _set("win_rows", _fill(10 ** 6))),
    "win_rows_negative": ("win_rows", _set("win_rows", lambda x, a, m: x - 5)),
    "bank_cur": ("bank_cur", _set("bank_cur", lambda x, a, m: x + V_OF(m))),
    "bank_nxt_negative": ("bank_nxt", _set("bank_nxt", _fill(-1))),
    "bank_labels": ("bank_labels", _set("bank_labels", _fill(10 ** 6))),
    "stream": ("stream", _set("stream", lambda x, a, m: x + V_OF(m))),
    "stream_negative": ("stream", _set("stream", _fill(-7))),
    "inputs_2e9": ("inputs", _set("inputs", _fill(2 * 10 ** 9))),
    "sentences": ("sentences", _set("sentences", _fill(10 ** 6))),
    "sent_offsets_1e9": ("sent_offsets", _set("sent_offsets",
                                              lambda x, a, m: np.r_[x[:-1], 10 ** 9])),
    "sent_offsets_decreasing": ("sent_offsets", _set("sent_offsets", lambda x, a, m:
                                                     np.r_[x[0], x[1:-1][::-1], x[-1]])),
    "in_offsets": ("in_offsets", _set("in_offsets", lambda x, a, m: x * 3)),
    "kn_grams": ("kn_grams", _set("kn_grams", lambda x, a, m: x + V_OF(m))),
    "kn_grams_negative": ("kn_grams", _set("kn_grams", _fill(-1))),
    "kn_grams_unsorted": ("kn_grams", _set("kn_grams", lambda x, a, m: x[::-1].copy())),
    "kn_grams_width": ("kn_grams", _set("kn_grams", lambda x, a, m: x[:, :-1].copy())),
    "kn_gram_counts": ("kn_gram_counts", _set("kn_gram_counts", _fill(0))),
    "kn_order_mismatch": ("kn_tri_keys", _meta(lambda m: m["config"].update(b_order=3))),
    "gate_ll_positive": ("gate_ll_bin", _set("gate_ll_bin", _fill(1.0))),
    "gate_ll_nan": ("gate_ll_bin", _set("gate_ll_bin", _fill(np.nan))),
    "bank_unsorted": ("bank_cur", _set("bank_cur", lambda x, a, m: x[::-1].copy())),
    "win_cnt_zero": ("win_cnt", _set("win_cnt", _fill(0))),
    "gate_negative": ("gate_n_tok", _set("gate_n_tok", _fill(-1))),
    # wrong shapes and dtypes
    "keys_3x3": ("keys", _set("keys", lambda x, a, m: np.zeros((3, 3), np.float32))),
    "keys_nan": ("keys", _set("keys", _fill(np.nan))),
    "gate_hits_bin_2d": ("gate_hits_bin", _set("gate_hits_bin",
                                               lambda x, a, m: x.reshape(x.shape[0], -1))),
    "stream_float": ("stream", _set("stream", lambda x, a, m: x.astype(np.float64))),
    "win_rows_width": ("win_rows", _set("win_rows", lambda x, a, m: x[:, :-1].copy())),
    "bank_count_cut": ("bank_count", _set("bank_count", lambda x, a, m: x[:-1].copy())),
    "layers_signatures_3x3": ("layers_signatures",
                              _set("layers_signatures",
                                   lambda x, a, m: np.zeros((3, 3), np.float32))),
    "stream_missing": ("stream", lambda a, m: a.pop("stream")),
    # metadata against the arrays
    "vocab_cut_to_8": ("keys", _meta(lambda m: m["vocab"].update(
        itos=m["vocab"]["itos"][:8], counts=m["vocab"]["counts"][:8]))),
    "config_dim_7": ("keys", _meta(lambda m: m["config"].update(dim=7))),
    "config_dim_bogus": ("settings", _meta(lambda m: m["config"].update(dim=-3))),
    "n_pairs": ("n_pairs", _meta(lambda m: m.update(n_pairs=10 ** 9))),
    "scale_nan": ("scale", _meta(lambda m: m.update(scale=float("nan")))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_member_refused_in_process(good, tmp_path, case):
    _, arrays, meta = good
    word, edit = CASES[case]
    a, m = dict(arrays), json.loads(json.dumps(meta))
    edit(a, m)
    p = write(tmp_path / "bad.npz", a, m)
    with pytest.raises(ModelFileError) as e:
        Model.load(p)
    assert str(e.value).startswith(str(p)) and word in str(e.value)


@pytest.mark.parametrize("case", ["win_rows_1e6", "win_rows_negative", "bank_cur",
                                  "bank_labels", "stream", "inputs_2e9", "sentences",
                                  "sent_offsets_1e9", "keys_3x3", "gate_hits_bin_2d",
                                  "vocab_cut_to_8", "config_dim_7", "layers_signatures_3x3"])
@pytest.mark.parametrize("command", ["generate", "similar"])
def test_bad_member_through_the_cli(good, tmp_path, case, command):
    _, arrays, meta = good
    word, edit = CASES[case]
    a, m = dict(arrays), json.loads(json.dumps(meta))
    edit(a, m)
    p = write(tmp_path / "bad.npz", a, m)
    assert_refused(cli(command, p, "--prompt", "x"), str(p), word)


def _with_member(src: Path, dst: Path, name: str, writer) -> Path:
    """Copy ``src`` to ``dst`` with member ``name`` written by ``writer(zipfile, arcname)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename != name + ".npy":
                zout.writestr(info.filename, zin.read(info))
        writer(zout, name + ".npy")
    return dst


def _header_bytes(shape, descr="<i4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()  # magic, version, length, header


def test_header_declaring_1e12_elements(good, tmp_path):
    src, _, _ = good
    p = _with_member(src, tmp_path / "huge.npz", "stream",
                     lambda z, n: z.writestr(n, _header_bytes((10 ** 12,)) + b"\0" * 64))
    assert_refused(cli("generate", p, "--prompt", "x"), "stream", "declares")


def _zero_member(shape, descr="<i4"):
    def writer(z: zipfile.ZipFile, name: str) -> None:
        n = int(np.prod(shape)) * np.dtype(descr).itemsize
        with z.open(name, "w", force_zip64=True) as f:
            f.write(_header_bytes(shape, descr))
            chunk = bytes(1 << 22)
            for _ in range(n // len(chunk)):
                f.write(chunk)
            f.write(bytes(n % len(chunk)))
    return writer


RSS = ("import sys; from core.model import Model; from core.scale import peak_rss_mb; "
       "m = Model.load(sys.argv[1]); "
       "print(m.generate('x', max_len=3).text is not None, int(peak_rss_mb() * 1024))")


@pytest.fixture(scope="module")
def gib_members(good, tmp_path_factory):
    """The model with a 1 GiB zero-filled ``stream`` and with a 1 GiB unused member."""
    src, _, _ = good
    d = tmp_path_factory.mktemp("gib")
    gib = (1 << 28,)  # int32: 1 GiB
    bomb = _with_member(src, d / "bomb.npz", "stream", _zero_member(gib))
    extra = _with_member(src, d / "extra.npz", "junk", _zero_member(gib))
    return bomb, extra


def test_gib_zero_member_refused_quickly(gib_members):
    bomb, _ = gib_members
    assert bomb.stat().st_size < 8 << 20
    assert_refused(cli("generate", bomb, "--prompt", "x"), "stream", "refused")


def _peak_kib(code: str, *args) -> tuple[str, int]:
    """Run ``code`` twice (the first run compiles and caches the kernels, whose
    compilation alone can take most of a GiB) and return the second run's
    stdout and peak RSS in KiB."""
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, int((r.stdout.split() or ["0"])[-1])


def test_unused_gib_member_never_decompressed(good, gib_members):
    src, _, _ = good
    _, extra = gib_members
    _, base = _peak_kib(RSS, src)
    out, rss = _peak_kib(RSS, extra)
    # decompressed, the unused member alone would add 1 GiB
    assert out.split()[0] == "True" and rss - base < 256 * 1024, (base, rss)


def test_deep_metadata_refused(good, tmp_path):
    src, _, _ = good
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    p = _with_member(src, tmp_path / "deep.npz", "__meta__", lambda z, n: z.writestr(
        n, _header_bytes((len(deep),), "|u1") + deep))
    assert_refused(cli("generate", p, "--prompt", "x"), "metadata")


def test_file_before_b_order_loads_as_a_trigram(good, tmp_path):
    """A file without ``b_order`` (B a trigram, ``kn_tri_*``, no likelihood gate) loads."""
    src, _, _ = good
    from core.baselines import KneserNey

    m = Model.load(src)
    kn = KneserNey(m.V, "modified", 3).add_stream(m.counts.stream)
    _, arrays, meta = good
    old = {k: v for k, v in arrays.items()
           if not k.startswith("kn_") and k not in ("gate_ll_bin", "gate_ll_n")}
    old.update(kn.to_arrays("kn_"))
    cfg = dict(meta["config"])
    cfg.pop("b_order")
    p = write(tmp_path / "old.npz", old, {**meta, "config": cfg})
    back = Model.load(p)
    assert back.config.b_order == 3 and back.counts.kn.order == 3
    assert not back.gate.ll_n.any()
    r = back.logprob_stream(m.counts.stream[:200])
    assert np.isfinite(r["bits"])
    assert back.generate("x", max_len=3, probes=False) is not None
    bad = dict(old)
    bad["kn_tri_keys"] = bad["kn_tri_keys"] + V_OF(meta) ** 3
    with pytest.raises(ModelFileError, match="kn_tri_keys"):
        Model.load(write(tmp_path / "old_bad.npz", bad, {**meta, "config": cfg}))


def test_good_model_still_loads_and_generates(good):
    src, _, _ = good
    r = cli("generate", src, "--prompt", "ValueError", "--method", "beam", "--width", "8")
    assert r.returncode == 0, r.stderr
    r = cli("similar", src, "--prompt", "Return the length")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr


# --------------------------------------------------------------------- fuzzing

USED = ["keys", "stream", "sentences", "sent_offsets", "kn_grams", "kn_gram_counts",
        "gate_ll_bin", "gate_ll_n",
        "bank_cur", "bank_nxt", "bank_count", "bank_prototypes", "bank_labels", "win_rows",
        "win_cnt", "mk_xtx", "mk_count", "gate_hits_bin", "gate_n_tok", "gate_by_proto",
        "inputs", "in_offsets", "mem_hits", "layers_signatures", "layers_settings",
        "layers_length"]


@st.composite
def corruption(draw):
    name = draw(st.sampled_from(USED))
    kind = draw(st.sampled_from(["values", "dtype", "shape", "truncate"]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return name, kind, seed


def _corrupt(x: np.ndarray, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "values" and x.size:
        x = x.copy()
        flat = x.reshape(-1)
        pos = rng.integers(0, flat.size, max(1, flat.size // 50))
        if x.dtype.kind == "f":
            flat[pos] = rng.choice([np.nan, np.inf, -1e30, 0.0, 1e30], pos.size)
        else:
            big = np.iinfo(x.dtype).max
            flat[pos] = rng.choice([-1, 0, 1, big, -big, 10 ** 6, int(flat.max()) + 1],
                                   pos.size).astype(x.dtype)
        return x
    if kind == "dtype":
        return x.astype(rng.choice([np.int8, np.int16, np.int64, np.float32, np.float64,
                                    np.uint32, np.bool_]))
    if kind == "shape":
        nd = int(rng.integers(0, 4))
        return rng.integers(-3, 600, tuple(int(n) for n in rng.integers(0, 6, nd))
                            ).astype(x.dtype)
    return x.reshape(-1)[: int(rng.integers(0, max(1, x.size)))]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(corruption())
def test_fuzzed_member_loads_or_refused(good, tmp_path, c):
    _, arrays, meta = good
    name, kind, seed = c
    a = dict(arrays)
    a[name] = _corrupt(arrays[name], kind, seed)
    p = write(tmp_path / "fuzz.npz", a, meta)
    try:
        m = Model.load(p)
    except ModelFileError as exc:
        assert str(exc).startswith(str(p))
        return
    g = m.generate("ValueError", max_len=4)
    assert len(g.ids) <= 4
    m.similar("Return the length", 3)


# ------------------------------------------------------------------- long prompts

def test_long_prompt_similar_and_beam_bounded(good, tmp_path):
    src, _, _ = good
    words = (SAMPLES / "python_docs.txt").read_text().split()
    prompt = " ".join((words * 20)[:20_000])
    for args in (("similar", src), ("generate", src, "--method", "beam", "--width", "64")):
        peaks = []
        for p in ("x", "x", prompt):  # the first run compiles and caches the kernels
            r = subprocess.run([sys.executable, "-c", CLI_RSS, *map(str, args), "--prompt", p],
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
            peaks.append(int(r.stderr.strip().splitlines()[-1]))
        # a 20,000-word prompt costs little more than a one-word one
        assert peaks[2] - peaks[1] < 256 * 1024, (args[0], peaks)


# --------------------------------------------------------------------- --out

@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    p = tmp_path_factory.mktemp("tiny") / "tiny.txt"
    p.write_text("the cat sat on the mat.\nthe dog sat on the log.\n" * 20)
    return p


def _train_to(corpus: Path, out: Path) -> subprocess.CompletedProcess:
    return cli("train", corpus, "--out", out, "--dim", "8", "--prototypes", "4",
               "--no-signatures", "-q", timeout=600)


def test_out_onto_fifo_refused(tiny_corpus, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_refused(_train_to(tiny_corpus, fifo), str(fifo), "FIFO")
    assert fifo.is_fifo() and os.listdir(tmp_path) == ["pipe"]


def test_out_onto_symlink_refused(tiny_corpus, tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    assert_refused(_train_to(tiny_corpus, link), str(link), "symbolic link")
    assert link.is_symlink() and target.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "target.txt"]


def test_out_onto_folder_refused_and_regular_file_replaced(tiny_corpus, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    assert_refused(_train_to(tiny_corpus, folder), str(folder), "folder")
    regular = tmp_path / "m.npz"
    regular.write_bytes(b"old")
    r = _train_to(tiny_corpus, regular)
    assert r.returncode == 0, r.stderr
    assert Model.load(regular).V > 4
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "models"]  # no temp file left


def test_save_refuses_odd_targets_in_process(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    for p, word in ((fifo, "FIFO"), (link, "symbolic link"), (tmp_path, "folder")):
        with pytest.raises(OutPathError, match=word):
            save(p, {"a": np.arange(3)}, {})
    assert fifo.is_fifo() and link.is_symlink()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["fifo", "link"]


# ------------------------------------------------------------------- window cache

def test_window_cache_evicts_a_bad_model(good, tiny_corpus, tmp_path, monkeypatch):
    from core.config import TrainConfig
    from explorer import worker

    monkeypatch.setenv("NOISEKEY_CACHE_DIR", str(tmp_path / "cache"))
    config = TrainConfig(dim=8, prototypes=4, signatures=False)
    path = worker.model_cache_path([str(tiny_corpus)], config)
    path.parent.mkdir(parents=True)
    _, arrays, meta = good
    a = dict(arrays)
    a["win_rows"] = np.full_like(a["win_rows"], 10 ** 6)
    write(path.with_suffix(".npz"), a, meta).rename(path)
    model, cached = worker.load_or_train([str(tiny_corpus)], config)
    assert not cached and model.V > 4
    # the bad file was replaced by the trained model: the next start loads it
    model2, cached2 = worker.load_or_train([str(tiny_corpus)], config)
    assert cached2 and model2.V == model.V


def test_window_cache_folder_at_the_cache_path(tiny_corpus, tmp_path, monkeypatch):
    from core.config import TrainConfig
    from explorer import worker

    monkeypatch.setenv("NOISEKEY_CACHE_DIR", str(tmp_path / "cache"))
    config = TrainConfig(dim=8, prototypes=4, signatures=False)
    path = worker.model_cache_path([str(tiny_corpus)], config)
    path.mkdir(parents=True)
    model, cached = worker.load_or_train([str(tiny_corpus)], config)
    assert not cached and model.V > 4 and path.is_dir()


def test_window_cache_written_later_is_read_by_the_next_start(tiny_corpus, tmp_path, monkeypatch):
    """``write_later`` hands the model over first; the next call waits for the write."""
    from core.config import TrainConfig
    from explorer import worker

    monkeypatch.setenv("NOISEKEY_CACHE_DIR", str(tmp_path / "cache"))
    config = TrainConfig(dim=8, prototypes=4, signatures=False)
    path = worker.model_cache_path([str(tiny_corpus)], config)
    model, cached = worker.load_or_train([str(tiny_corpus)], config, write_later=True)
    assert not cached
    model2, cached2 = worker.load_or_train([str(tiny_corpus)], config, write_later=True)
    assert cached2 and path.is_file() and model2.V == model.V
    np.testing.assert_array_equal(model2.keys, model.keys)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_cache_write_started_by_a_foreign_thread_outlives_the_exit(tiny_corpus, tmp_path):
    """The window trains on a QThread (a daemon to Python): its cache write still lands.

    A process whose worker thread returns the model and whose main thread then
    exits at once (the window closed right after training) must leave the
    cached file whole, not a cut-off temporary.
    """
    cache = tmp_path / "cache"
    code = f"""
import _thread, threading, time
from core.config import TrainConfig
from explorer import worker
write = worker._write_cache
worker._write_cache = lambda m, p: (time.sleep(0.5), write(m, p))  # a slow disk
done = threading.Event()
def train():
    worker.load_or_train([{str(tiny_corpus)!r}], TrainConfig(dim=8, prototypes=4,
                         signatures=False), write_later=True)
    done.set()
_thread.start_new_thread(train, ())  # a thread Python did not start, as a QThread
done.wait(120)
"""
    env = {**os.environ, "NOISEKEY_CACHE_DIR": str(cache), "NOISEKEY_NO_WARMUP": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300,
                   cwd=str(Path(__file__).resolve().parents[1]))
    files = [p.name for p in cache.iterdir()] if cache.exists() else []
    assert [f for f in files if f.endswith(".nkm")], files
    assert not [f for f in files if f.endswith(".tmp")], files
