"""Model file: round trip, bad files, atomic writes."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from core import modelfile
from core.modelfile import FORMAT_VERSION, ModelFileError, load, save


def _arrays():
    rng = np.random.default_rng(0)
    return {"keys": rng.random((30, 8), dtype=np.float32), "ids": np.arange(5, dtype=np.int32)}


META = {"tokenizer": "word", "vocab": {"itos": ["<bos>", "<eos>", "<sep>", "<unk>", "é"]},
        "settings": {"dim": 8}}


@pytest.mark.parametrize("compress", [True, False, 9])
def test_round_trip(tmp_path, compress):
    p = tmp_path / "m.npz"
    save(p, _arrays(), META, compress=compress)
    arrays, meta = load(p)
    for k, v in _arrays().items():
        assert arrays[k].dtype == v.dtype and np.array_equal(arrays[k], v)
    assert meta["format_version"] == FORMAT_VERSION and meta["app_version"]
    assert meta["vocab"] == META["vocab"] and meta["settings"] == {"dim": 8}
    assert modelfile.read_meta(p)["tokenizer"] == "word"


def test_compression_level_is_numpys_archive(tmp_path):
    """Levels change only the deflate level: np.load reads every one; 0 stores."""
    import zipfile

    big = {"keys": np.tile(np.arange(4000, dtype=np.float32), 8)}
    sizes = {}
    for level in (0, 1, 9):
        p = tmp_path / f"m{level}.npz"
        save(p, big, META, compress=level)
        with np.load(p) as z:
            assert np.array_equal(z["keys"], big["keys"])
        with zipfile.ZipFile(p) as z:
            kinds = {i.compress_type for i in z.infolist()}
        assert kinds == {zipfile.ZIP_STORED if level == 0 else zipfile.ZIP_DEFLATED}
        sizes[level] = p.stat().st_size
    assert sizes[9] <= sizes[1] < sizes[0]
    with pytest.raises(ValueError, match="zlib level"):
        save(tmp_path / "bad.npz", big, META, compress=10)
    assert not (tmp_path / "bad.npz").exists()


def test_truncated_file(tmp_path):
    p = tmp_path / "m.npz"
    save(p, _arrays(), META)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load(p)


def test_garbage_and_wrong_files(tmp_path):
    g = tmp_path / "garbage.npz"
    g.write_bytes(os.urandom(1000))
    with pytest.raises(ModelFileError) as e:
        load(g)
    assert str(e.value).startswith(str(g))
    text = tmp_path / "notes.npz"
    text.write_text("garbage\n")
    with pytest.raises(ModelFileError, match="not an npz archive"):
        load(text)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.arange(3))
    with pytest.raises(ModelFileError, match="no metadata"):
        load(plain)
    with pytest.raises(ModelFileError, match="no such file"):
        load(tmp_path / "missing.npz")
    with pytest.raises(ModelFileError, match="folder"):
        load(tmp_path)


def _rewrite_meta(path, meta):
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def test_newer_version_refused(tmp_path):
    p = tmp_path / "m.npz"
    save(p, _arrays(), META)
    meta = modelfile.read_meta(p)
    meta["format_version"] = FORMAT_VERSION + 1
    _rewrite_meta(p, meta)
    with pytest.raises(ModelFileError, match="newer"):
        load(p)


def test_wrong_format_tag_refused(tmp_path):
    p = tmp_path / "m.npz"
    save(p, _arrays(), META)
    meta = modelfile.read_meta(p)
    meta["format"] = "something-else"
    _rewrite_meta(p, meta)
    with pytest.raises(ModelFileError, match="wrong format"):
        load(p)


def test_corrupt_member_detected(tmp_path):
    p = tmp_path / "m.npz"
    save(p, _arrays(), META, compress=False)
    data = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("keys.npy")
    pos = info.header_offset + 30 + len(info.filename) + 200  # inside the array data
    data[pos] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        load(p)


def test_no_pickles(tmp_path):
    with pytest.raises(ValueError, match="pickle"):
        save(tmp_path / "m.npz", {"x": np.array([{}, 1], dtype=object)}, {})
    with pytest.raises(ValueError, match="reserved"):
        save(tmp_path / "m.npz", {"__meta__": np.zeros(1)}, {})


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "m.npz"
    save(p, _arrays(), META)
    before = p.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        save(p, {"keys": np.zeros((3, 3), np.float32)}, {"tokenizer": "byte"})
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.npz"]  # temp file removed
    monkeypatch.undo()
    save(p, {"keys": np.zeros((3, 3), np.float32)}, {"tokenizer": "byte"})
    assert load(p)[1]["tokenizer"] == "byte"


def test_unserialisable_meta_leaves_no_file(tmp_path):
    p = tmp_path / "m.npz"
    with pytest.raises(TypeError):
        save(p, {}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_archive_reads_only_what_is_asked_and_checks_it(tmp_path):
    p = tmp_path / "m.npz"
    save(p, {"ids": np.array([0, 3, 4], np.int32), "off": np.array([0, 2, 3], np.int64),
             "x": np.array([1.0, np.nan], np.float32)}, META)
    with modelfile.Archive(p) as ar:
        assert ar.names == {"ids", "off", "x"} and ar.meta["tokenizer"] == "word"
        assert ar.header("ids") == ((3,), np.dtype(np.int32))
        assert ar.read("ids", np.int32, (None,), lo=0, hi=5).tolist() == [0, 3, 4]
        with pytest.raises(ModelFileError, match=r"'ids': values must lie in 0\.\.3"):
            ar.read("ids", np.int32, lo=0, hi=4)
        with pytest.raises(ModelFileError, match=r"'ids': dtype int32, expected int64"):
            ar.read("ids", np.int64)
        with pytest.raises(ModelFileError, match=r"'ids': shape \(3,\), expected \(N, 2\)"):
            ar.read("ids", np.int32, (None, 2))
        with pytest.raises(ModelFileError, match="'ids': 3 rows, more than"):
            ar.read("ids", np.int32, max_rows=2)
        assert ar.offsets("off", 3, 2).tolist() == [0, 2, 3]
        with pytest.raises(ModelFileError, match="offsets must run from 0 to 4"):
            ar.offsets("off", 4)
        with pytest.raises(ModelFileError, match="NaN"):
            ar.read("x", np.float32, finite=True)
        with pytest.raises(ModelFileError, match="'nope' is missing"):
            ar.read("nope")


def test_member_size_checked_before_decompressing(tmp_path, monkeypatch):
    p = tmp_path / "m.npz"
    # 8 MiB of zeros, ~8 KB packed at level 9 (a bomb packs as tightly as it can)
    save(p, {"zeros": np.zeros(1 << 20, np.int64)}, META, compress=9)
    monkeypatch.setattr(modelfile, "RATIO_FLOOR", 1 << 16)
    with modelfile.Archive(p) as ar:
        with pytest.raises(ModelFileError, match="'zeros': declares 8,388,608 bytes"):
            ar.read("zeros")
        # a table whose shape the caller fixed from the model's sizes is read
        assert ar.read("zeros", np.int64, (1 << 20,), sparse=True).sum() == 0
    with pytest.raises(ModelFileError, match="'zeros'"):
        load(p)
    assert modelfile.read_meta(p)["tokenizer"] == "word"  # the metadata alone still reads
