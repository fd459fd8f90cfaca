"""Hostile corpora and save targets: each is one line and exit 2, never a hang.

Save errors (disk full, missing or read-only folder, ``--out`` naming a
folder) name ``--out`` and leave no temporary; a killed save's temporary is
cleaned by the next save; saved files get the user's umask. Corpora that are
FIFOs, devices or sockets are refused from their ``stat`` (also in
``--screenshot``); deeply nested JSONL, a NUL byte past the sniffed head, a
line past 16 MiB and a locked folder each give one line. The window's corpus
cache key reads a bounded number of bytes and can be cancelled; its drop
filter turns a self-referencing symlink into one readable message.

The CLI runs in a subprocess with a timeout, so a hang fails the test and a
crash shows as a signal.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import core.files as cf
import core.readers as cc
from core import modelfile
from core.corpus import Cancelled, CorpusError, load_corpus
from core.modelfile import ModelFileError, SaveError, save
from tests.cli_helpers import assert_refused, cli, run

WINDOW = "from explorer.cli import main; raise SystemExit(main())"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TRAIN = ["--dim", "8", "--prototypes", "4", "--no-signatures", "-q"]




def temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    p = tmp_path / "tiny.txt"
    p.write_text("the cat sat on the mat.\nthe dog sat on the log.\n" * 20)
    return p


# ----------------------------------------------------------------------- saves

def _enospc(f, data, level):
    f.write(b"x" * 4096)  # part of the archive reached the disk
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_in_process(tmp_path, monkeypatch):
    p = tmp_path / "m.npz"
    save(p, {"a": np.arange(3)}, {})
    before = p.read_bytes()
    monkeypatch.setattr(modelfile, "_write_zip", _enospc)
    with pytest.raises(SaveError) as err:
        save(p, {"a": np.arange(5)}, {})
    e = err.value
    assert str(e).startswith(f"{p}: ") and "no space left" in str(e) and ".tmp" not in str(e)
    assert e.errno == errno.ENOSPC and isinstance(e, OSError) and isinstance(e, ModelFileError)
    assert p.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]


def test_disk_full_through_the_cli(tiny_corpus, tmp_path):
    out = tmp_path / "out" / "m.npz"
    out.parent.mkdir()
    code = textwrap.dedent("""
        import errno
        import core.modelfile
        def full(f, data, level):
            f.write(b"x" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        core.modelfile._write_zip = full
        from core.cli import main
        raise SystemExit(main())
    """)
    r = run(code, "train", tiny_corpus, "--out", out, *TRAIN, timeout=600)
    line = assert_refused(r, str(out), "no space left")
    assert ".tmp" not in line and os.listdir(out.parent) == []


def test_missing_folder_names_out(tiny_corpus, tmp_path):
    out = tmp_path / "nowhere" / "m.npz"
    line = assert_refused(cli("train", tiny_corpus, "--out", out, *TRAIN), str(out),
                          "does not exist")
    assert ".tmp" not in line and not out.parent.exists()
    with pytest.raises(SaveError, match="does not exist"):
        save(out, {"a": np.arange(3)}, {})


def test_folder_part_is_a_file(tiny_corpus, tmp_path):
    out = tiny_corpus / "m.npz"
    assert_refused(cli("train", tiny_corpus, "--out", out, *TRAIN), str(out), "is a file")


def test_out_naming_a_folder(tiny_corpus, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    assert_refused(cli("train", tiny_corpus, "--out", folder, *TRAIN), str(folder), "folder")
    assert os.listdir(folder) == []


@pytest.mark.skipif(IS_ROOT, reason="root ignores folder permissions")
def test_read_only_folder_names_out(tiny_corpus, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "m.npz"
    folder.chmod(0o555)
    try:
        line = assert_refused(cli("train", tiny_corpus, "--out", out, *TRAIN), str(out),
                              "permission denied")
        assert ".tmp" not in line and os.listdir(folder) == []
        with pytest.raises(SaveError, match="permission denied"):
            save(out, {"a": np.arange(3)}, {})
    finally:
        folder.chmod(0o755)


def test_read_only_folder_in_process_even_as_root(tmp_path, monkeypatch):
    """A folder the user may not write, or a write failing with EROFS, names the target."""
    out = tmp_path / "m.npz"
    with monkeypatch.context() as m:
        m.setattr(modelfile.os, "access", lambda path, mode: False)
        with pytest.raises(SaveError) as err:
            save(out, {"a": np.arange(3)}, {})
        assert str(err.value) == f"{out}: cannot write the model file: permission denied"

    def refuse(*a, **k):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(modelfile.tempfile, "mkstemp", refuse)
    with pytest.raises(SaveError) as err:
        save(out, {"a": np.arange(3)}, {})
    assert str(err.value).startswith(f"{out}: ") and "read-only" in str(err.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_saved_file_gets_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        p = save(tmp_path / "m.npz", {"a": np.arange(3)}, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~mask
    assert modelfile.current_umask() == old


def test_killed_save_leaves_a_temp_the_next_save_cleans(tmp_path):
    p = tmp_path / "m.npz"
    save(p, {"a": np.arange(3)}, {})
    before = p.read_bytes()
    code = textwrap.dedent("""
        import os, sys, time
        import numpy as np
        from core import modelfile
        def stuck(fd):
            print("writing", flush=True)
            time.sleep(120)
        modelfile.os.fsync = stuck
        modelfile.save(sys.argv[1], {"a": np.arange(100000)}, {})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(p)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    stale = temps(tmp_path)
    assert len(stale) == 1 and stale[0].startswith(".m.npz.")
    assert p.read_bytes() == before  # the killed save never touched the target
    save(p, {"a": np.arange(4)}, {})
    assert os.listdir(tmp_path) == ["m.npz"]
    assert modelfile.load(p)[0]["a"].tolist() == [0, 1, 2, 3]


def test_cleaning_spares_a_save_in_progress_and_other_files(tmp_path):
    import fcntl

    p = tmp_path / "m.npz"
    live = tmp_path / ".m.npz.abcd1234.tmp"  # a concurrent save holds its lock
    dead = tmp_path / ".m.npz.zzzz9999.tmp"
    other = tmp_path / ".other.npz.abcd1234.tmp"  # another target's temporary
    odd = tmp_path / ".m.npz.abcd.tmp"  # not a name mkstemp gives
    for f in (live, dead, other, odd):
        f.write_bytes(b"partial")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        save(p, {"a": np.arange(3)}, {})
        assert sorted(os.listdir(tmp_path)) == sorted(
            ["m.npz", live.name, other.name, odd.name])
    finally:
        os.close(fd)


# --------------------------------------------------------------------- corpora

def test_deeply_nested_jsonl(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n' + "[" * 100000 + "]" * 100000 + "\n")
    assert_refused(cli("info", "-q", p, timeout=60), f"{p}:2:", "nested")
    with pytest.raises(CorpusError) as err:
        load_corpus(p)
    assert err.value.line == 2 and "nested deeper than" in err.value.reason


def test_jsonl_brackets_inside_strings_are_text(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"prompt": "' + "[" * 500 + '", "response": "{}"}\n')
    c = load_corpus(p)
    assert c.n_pairs == 1


def test_jsonl_moderate_nesting_parses(tmp_path):
    p = tmp_path / "n.jsonl"
    deep = "[" * 60 + "]" * 60
    p.write_text('{"prompt": "a", "response": "b", "extra": ' + deep + "}\n")
    assert load_corpus(p).n_pairs == 1


def test_fifo_refused_without_hanging(tmp_path):
    fifo = tmp_path / "p.txt"
    os.mkfifo(fifo)
    assert_refused(cli("info", "-q", fifo, timeout=60), str(fifo), "FIFO")
    with pytest.raises(CorpusError, match="FIFO"):
        load_corpus(fifo)


def test_fifo_inside_a_folder_is_skipped(tmp_path):
    os.mkfifo(tmp_path / "p.txt")
    (tmp_path / "good.txt").write_text("some text here\n")
    c = load_corpus(tmp_path)
    assert [Path(f).name for f in c.files] == ["good.txt"]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_device_refused(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    assert_refused(cli("info", "-q", device, timeout=60), device, "device")


def test_socket_refused(tmp_path):
    path = tmp_path / "s.txt"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))
    except OSError as exc:  # pragma: no cover - a path too long for AF_UNIX
        pytest.skip(f"cannot bind a socket here: {exc}")
    try:
        assert_refused(cli("info", "-q", path, timeout=60), str(path), "socket")
    finally:
        s.close()


def test_fifo_swapped_in_after_the_stat_is_refused(tmp_path):
    fifo = tmp_path / "p.txt"
    os.mkfifo(fifo)
    with pytest.raises(CorpusError, match="FIFO"):
        cf.sniff(fifo)  # opened non-blocking, then fstat-checked


def test_fifo_screenshot_refused_without_hanging(tmp_path):
    fifo = tmp_path / "p.txt"
    os.mkfifo(fifo)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen",
               NOISEKEY_CACHE_DIR=str(tmp_path / "cache"),
               NOISEKEY_SETTINGS_DIR=str(tmp_path / "settings"), NUMBA_NUM_THREADS="2")
    r = run(WINDOW, "--screenshot", tmp_path / "o.png", "--timeout", "10", fifo,
            timeout=120, env=env)
    assert_refused(r, str(fifo), "FIFO")
    assert not (tmp_path / "o.png").exists()


def _with_nul(tmp_path: Path, suffix: str) -> Path:
    p = tmp_path / f"late_nul{suffix}"
    row = {".txt": b"hello world again\n", ".tsv": b"hello\tworld\n",
           ".jsonl": b'{"prompt": "hello", "response": "world"}\n'}[suffix]
    n = 20000 // len(row) + 1  # well past the 8 KiB sniffed
    p.write_bytes(row * n + row[:3] + b"\x00" + row[3:] + row)
    return p


@pytest.mark.parametrize("suffix", [".txt", ".tsv", ".jsonl"])
@pytest.mark.parametrize("tokenizer", ["word", "byte"])
def test_nul_after_the_sniffed_head_refused_alike(tmp_path, suffix, tokenizer):
    p = _with_nul(tmp_path, suffix)
    n = p.read_bytes().split(b"\n").index(next(x for x in p.read_bytes().split(b"\n")
                                               if b"\x00" in x)) + 1
    with pytest.raises(CorpusError) as err:
        load_corpus(p, tokenizer=tokenizer)
    assert err.value.line == n and "NUL" in err.value.reason
    head = tmp_path / f"head{suffix}"  # the same reason when the NUL is in the head
    head.write_bytes(b"ab\x00c\n")
    with pytest.raises(CorpusError) as err2:
        load_corpus(head, tokenizer=tokenizer)
    assert err2.value.reason == err.value.reason


def test_nul_through_the_cli(tmp_path):
    p = _with_nul(tmp_path, ".txt")
    assert_refused(cli("info", "-q", p, timeout=60), str(p), "NUL")


def test_long_line_refused_in_one_pass(tmp_path, monkeypatch):
    """Each byte is scanned once, however many chunks the line spans."""
    monkeypatch.setattr(cc, "MAX_LINE", 1 << 20)
    scanned: list[int] = []
    real = cc._check_line_lengths

    def counting(data, path, lines_before):
        scanned.append(len(data))
        return real(data, path, lines_before)

    monkeypatch.setattr(cc, "_check_line_lengths", counting)
    p = tmp_path / "long.txt"
    size = 3 << 20
    p.write_bytes(b"short line\n" + b"w " * (size // 2) + b"\nend\n")
    with pytest.raises(CorpusError) as err:
        load_corpus(p)
    assert err.value.line == 2 and "longer than" in err.value.reason
    assert sum(scanned) <= p.stat().st_size
    # a line within the limit that spans many chunks still loads
    ok = tmp_path / "ok.txt"
    ok.write_bytes(b"w " * ((1 << 20) // 2 - 1) + b"\nend\n")
    assert load_corpus(ok).stats.lines == 2


def test_long_line_through_the_cli(tmp_path):
    p = tmp_path / "long.txt"
    with open(p, "wb") as f:
        f.write(b"a" * (17 << 20) + b"\n")
    assert_refused(cli("info", "-q", p, timeout=120), f"{p}:1:", "longer than 16 MiB")


def test_locked_folder_says_permission_denied_in_process(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.txt").write_text("hidden by permissions\n")
    real = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(cf.os, "scandir", scandir)
    with pytest.raises(CorpusError) as err:
        load_corpus(tmp_path)  # the locked folder is a subfolder here
    assert err.value.path == str(locked) and "permission denied" in err.value.reason
    with pytest.raises(CorpusError, match="permission denied"):
        load_corpus(locked)


@pytest.mark.skipif(IS_ROOT, reason="root ignores folder permissions")
def test_locked_folder_says_permission_denied(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.txt").write_text("hidden by permissions\n")
    locked.chmod(0)
    try:
        line = assert_refused(cli("info", "-q", locked, timeout=60), str(locked),
                              "permission denied")
        assert "no corpus files" not in line
    finally:
        locked.chmod(0o755)


def test_self_referencing_symlink_as_corpus(tmp_path):
    link = tmp_path / "self.txt"
    link.symlink_to(link.name)
    assert_refused(cli("info", "-q", link, timeout=60), str(link), "loop")
    (tmp_path / "good.txt").write_text("text\n")
    assert len(load_corpus(tmp_path).files) == 1  # inside a folder: skipped


# ------------------------------------------------------------ window cache key

def test_corpus_hash_reads_a_bounded_amount(tmp_path, monkeypatch):
    from explorer import worker

    p = tmp_path / "big.txt"
    with open(p, "wb") as f:  # 2 GiB, sparse: holes read as zeros
        f.truncate(2 << 30)
    read = {"bytes": 0}
    real_open = cf.open_regular

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def fileno(self):
            return self.fh.fileno()

        def seek(self, off):
            return self.fh.seek(off)

        def read(self, n=-1):
            b = self.fh.read(n)
            read["bytes"] += len(b)
            return b

    monkeypatch.setattr(cf, "open_regular", lambda path: Counting(real_open(path)))
    key = worker.corpus_hash([p])
    limit = 2 * worker.HASH_EDGE + worker.HASH_SAMPLES * worker.HASH_BLOCK
    assert 0 < read["bytes"] <= limit
    assert worker.corpus_hash([p]) == key
    with open(p, "r+b") as f:  # a change in the last MiB changes the key
        f.seek((2 << 30) - 10)
        f.write(b"x")
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert worker.corpus_hash([p]) != key


def test_corpus_hash_small_file_reads_every_byte(tmp_path):
    from explorer import worker

    p = tmp_path / "small.txt"
    p.write_bytes(b"hello world\n" * 1000)
    st = p.stat()
    key = worker.corpus_hash([p])
    p.write_bytes(b"hello wOrld\n" * 1000)  # same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same modification time
    assert worker.corpus_hash([p]) != key


def test_corpus_hash_cancellable(tmp_path):
    from explorer import worker

    p = tmp_path / "big.txt"
    with open(p, "wb") as f:
        f.truncate(1 << 30)
    polls = {"n": 0}

    def cancel():
        polls["n"] += 1
        return polls["n"] > 3

    with pytest.raises(Cancelled):
        worker.corpus_hash([p], cancel=cancel)
    assert polls["n"] == 4


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_corpus_hash_refuses_fifos_and_devices(tmp_path, kind):
    from explorer import worker

    if kind == "fifo":
        path = tmp_path / "p.txt"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
        if not path.exists():
            pytest.skip("no /dev/zero")
    with pytest.raises(CorpusError, match="FIFO|device"):
        worker.corpus_hash([str(path)])


# --------------------------------------------------------------- drop filter

def test_drop_of_a_self_referencing_symlink(qtbot, tmp_path, monkeypatch):
    from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    from explorer import settings
    from explorer.main_window import MainWindow

    settings.use_settings_dir(tmp_path / "settings")
    monkeypatch.setenv("NOISEKEY_CACHE_DIR", str(tmp_path / "models"))
    link = tmp_path / "self"
    link.symlink_to("self")
    w = MainWindow(corpora=[], prompt="", autostart=False, use_cache=False)
    qtbot.addWidget(w)
    try:
        w.show()
        before = w.corpus_panel.paths()
        md = QMimeData()
        md.setUrls([QUrl.fromLocalFile(str(link))])
        enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, md,
                                Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(w, enter)
        assert enter.isAccepted()
        ev = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, md,
                        Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        with qtbot.waitSignal(w.corpus_panel.errorRaised, timeout=5000) as blocker:
            QApplication.sendEvent(w, ev)  # pytest-qt fails the test if the filter raised
        msg = blocker.args[0]
        assert str(link) in msg and "symbolic link loop" in msg and "\n" not in msg
        assert w.corpus_panel.error_label.isVisible()
        assert w.corpus_panel.paths() == before
    finally:
        w.close()
        settings.use_settings_dir(None)


def test_open_and_recent_of_a_self_referencing_symlink(qtbot, tmp_path, monkeypatch):
    """File ▸ Open and the recent list take the same checked path as a drop."""
    from PySide6.QtWidgets import QFileDialog

    from explorer import settings
    from explorer.main_window import MainWindow

    settings.use_settings_dir(tmp_path / "settings")
    monkeypatch.setenv("NOISEKEY_CACHE_DIR", str(tmp_path / "models"))
    link = tmp_path / "self"
    link.symlink_to("self")
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: ([str(link)], ""))
    w = MainWindow(corpora=[], prompt="", autostart=False, use_cache=False)
    qtbot.addWidget(w)
    try:
        before = w.corpus_panel.paths()
        with qtbot.waitSignal(w.corpus_panel.errorRaised, timeout=5000) as blocker:
            w.open_dialog()
        assert "symbolic link loop" in blocker.args[0]
        assert w.corpus_panel.paths() == before
    finally:
        w.close()
        settings.use_settings_dir(None)


# ------------------------------------------------------------------- bench gui

BENCH_GUI = "from explorer.cli import main; raise SystemExit(main())"


@pytest.mark.parametrize("kind", ["missing", "binary"])
def test_bench_gui_refuses_a_bad_corpus_at_once(tmp_path, kind):
    """One line, exit 2, no hang (it had waited 15 minutes for a model) and no abort."""
    path = tmp_path / "corpus.txt"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 64)
    r = run(BENCH_GUI, "bench", "gui", path, "--no-startup", "--no-training",
            "--no-long-prompt", "--keystrokes", "2", timeout=120,
            env={**os.environ, "QT_QPA_PLATFORM": "offscreen",
                 "NOISEKEY_SETTINGS_DIR": str(tmp_path / "settings"),
                 "NOISEKEY_CACHE_DIR": str(tmp_path / "models")})
    assert_refused(r, str(path), "no such file" if kind == "missing" else "binary")
