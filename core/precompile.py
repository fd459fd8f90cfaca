"""Compiling the numba kernels in parallel processes, from a list of signatures.

Numba compiles in Python (typing and lowering; LLVM's optimiser is a small
part: ``NUMBA_OPT=1`` saves nothing here) and holds the GIL, so a first start
compiles on one core however many it has: 47 s of compilation for the
bundled corpus's first training on the 2-core development machine, spread
over about 90 kernels, none above 3 s. Processes do not share a GIL. Every
compiled function pays a fixed share (its own typing, lowering and LLVM
module: 0.1-0.3 s for a ten-line helper), and a callee is compiled again
inside every kernel that inlines it, so two variants of one search cost
twice (the index had a single-query twin of its batch query, 1.4 s). Every
kernel is ``cache=True``, and numba loads a cached kernel in milliseconds, so
other processes can compile while this one waits and then load what they
wrote.

What to compile is not known without running the model: the kernels are
typed by their arguments on first call. :func:`record` runs the warm-up
workload (:func:`core.warmup.run_workload`) with a fresh numba cache and
writes every kernel signature compiled from Python (not the callees numba
compiles inside them) with its seconds to ``kernel_signatures.json`` beside
this module (signatures pickled: numba's own cache index stores them the
same way). :func:`compile_parallel` splits the entries over ``workers``
processes (``python -m core.precompile --part i --of n``; the longest first,
each to the least loaded process, every signature of a kernel and its
serial/threaded twin in the same process, so that two never write one
kernel's cache index at once and shared inner kernels compile once) and
reports progress from the files they append to. A worker done with its
part takes the other parts' last kernels, each claimed once
(:func:`_work_list`): the recorded seconds are measured in one process and
miss the parallel run's by a second and more, so a static split left one
core idle at the end (the whole parallel compilation with an empty cache,
three runs each: 14.6-14.9 s static, 13.6-14.1 s with the claims).

The list only makes compilation earlier: an entry that no longer matches its
kernel (a renamed kernel, other argument types) is skipped, a kernel missing
from the list compiles on first call as before, and anything a worker failed
at is compiled by the warm-up workload that runs after it. After a change to
the kernels' arguments, refresh the list with ``python -m core.precompile
--record`` (about a minute); tests/test_warmup.py checks that every entry
still names a kernel with that many arguments.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["MANIFEST", "Recorder", "assign", "compile_parallel", "load_manifest",
           "load_own_seconds", "merge_entries", "record", "resolve"]

#: The recorded kernel signatures (written by :func:`record`).
MANIFEST = Path(__file__).with_name("kernel_signatures.json")
POLL_S = 0.1
#: Groups of kernels whose shared callees make up more than this share of
#: the smaller group's compile seconds go to one process (:func:`assign`).
SHARED = 0.5


def resolve(name: str):
    """The numba dispatcher named ``"module:attr"`` or ``"module:attr.parallel|serial"``."""
    mod, _, attr = name.partition(":")
    attr, _, twin = attr.partition(".")
    obj = getattr(importlib.import_module(mod), attr)
    return getattr(obj, twin) if twin else obj


def _dispatcher_names() -> dict[int, str]:
    """id(dispatcher) -> name, for every kernel of the loaded ``core`` modules."""
    from numba.core.dispatcher import Dispatcher

    names: dict[int, str] = {}
    for mod_name, mod in list(sys.modules.items()):
        if not (mod_name == "core" or mod_name.startswith("core.")) or mod is None:
            continue
        for attr, obj in vars(mod).items():
            for twin in ("", ".parallel", ".serial"):
                d = getattr(obj, twin[1:], None) if twin else obj
                if isinstance(d, Dispatcher) and d.py_func.__module__ == mod_name:
                    names.setdefault(id(d), f"{mod_name}:{attr}{twin}")
    return names


class Recorder:
    """Listens to numba's compile events: the kernel signatures compiled from Python.

    ``start()`` before the work, ``write(path)`` after it (the entries of
    :func:`load_manifest`'s format; callees numba compiles inside a kernel
    are not listed, they come with it). Numba compiles under one lock, so
    events nest only within a thread.

    Each compiled function (a core kernel, or one of numba's own overloads
    such as ``np.empty``'s, per signature) is timed less its nested
    compiles (``own_seconds``), and each entry lists the functions its code
    links (``closure``, from the compiled libraries' links): what a fresh
    process compiles with it, so :func:`assign` knows what two kernels share.
    """

    def __init__(self) -> None:
        self.seen: list[tuple[object, tuple, float]] = []
        self.own: dict[int, tuple[str, float]] = {}  # id(library) -> (key, own seconds)
        self._depth = 0
        self._started: list[list[float]] = []  # [start, seconds of nested compiles]

    def start(self) -> Recorder:
        from numba.core import event

        rec = self

        class _Top(event.Listener):
            def on_start(self, e):
                rec._depth += 1
                rec._started.append([time.perf_counter(), 0.0])

            def on_end(self, e):
                rec._depth -= 1
                t0, nested = rec._started.pop()
                dt = time.perf_counter() - t0
                if rec._started:
                    rec._started[-1][1] += dt
                disp, args = e.data["dispatcher"], tuple(e.data["args"])
                cres = disp.overloads.get(args)
                if cres is not None:
                    key = f"{_key(disp)}{args}"
                    rec.own[id(cres.library)] = (key, dt - nested)
                if rec._depth == 0:
                    rec.seen.append((disp, args, dt))

        event.register("numba:compile", _Top())
        return self

    def _closure(self, disp, sig) -> list[str]:
        """Keys of the timed functions the compiled ``disp(sig)`` links, itself included."""
        cres = disp.overloads.get(sig)
        out: set[str] = set()
        todo = [cres.library] if cres is not None else []
        seen: set[int] = set()
        while todo:
            lib = todo.pop()
            if id(lib) in seen:
                continue
            seen.add(id(lib))
            if id(lib) in self.own:
                out.add(self.own[id(lib)][0])
            todo.extend(getattr(lib, "_linking_libraries", ()))
        return sorted(out)

    def entries(self) -> list[dict]:
        """One entry per core kernel compiled from Python, the longest first."""
        names = _dispatcher_names()
        entries: dict[str, dict] = {}
        for disp, sig, dt in self.seen:
            name = names.get(id(disp))
            if name is None:
                continue  # not a core kernel
            e = entries.setdefault(name, {"kernel": name, "seconds": 0.0, "sigs": [],
                                          "closure": []})
            e["seconds"] = round(e["seconds"] + dt, 3)
            e["sigs"].append(base64.b64encode(pickle.dumps(sig, protocol=4)).decode())
            e["closure"] = sorted(set(e["closure"]) | set(self._closure(disp, sig)))
        return sorted(entries.values(), key=lambda e: -e["seconds"])

    def write(self, out: Path) -> None:
        import numba

        entries = self.entries()
        used = {k for e in entries for k in e["closure"]}
        own: dict[str, float] = {}
        for key, secs in self.own.values():
            if key in used:
                own[key] = round(own.get(key, 0.0) + secs, 3)
        doc = {"numba": numba.__version__, "entries": entries,
               "own_seconds": dict(sorted(own.items()))}
        Path(out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _record_here(out: Path) -> None:
    """Run the warm-up workload here and write what it compiled from Python."""
    from core.warmup import run_workload

    rec = Recorder().start()
    run_workload()
    rec.write(out)


def record(out: Path = MANIFEST) -> None:
    """Rewrite the signature list from a warm-up run with an empty numba cache."""
    with tempfile.TemporaryDirectory(prefix="noisekey-record-") as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=tmp, XDG_CACHE_HOME=tmp)
        subprocess.run([sys.executable, "-m", "core.precompile", "--record-here", str(out)],
                       env=env, check=True)


def load_manifest(path: Path = MANIFEST) -> list[dict]:
    """The recorded entries (``kernel``, ``seconds``, ``sigs``); [] if unreadable."""
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def merge_entries(*lists: list[dict]) -> list[dict]:
    """One entry per kernel over several lists: the union of signatures and of closures
    (where recorded), the most seconds."""
    out: dict[str, dict] = {}
    for entries in lists:
        for e in entries:
            m = out.setdefault(e["kernel"], {"kernel": e["kernel"], "seconds": 0.0, "sigs": []})
            m["seconds"] = max(float(m["seconds"]), float(e.get("seconds", 0.0)))
            m["sigs"] += [sig for sig in e["sigs"] if sig not in m["sigs"]]
            if e.get("closure"):
                m["closure"] = sorted(set(m.get("closure", [])) | set(e["closure"]))
    return sorted(out.values(), key=lambda e: -e["seconds"])


def load_own_seconds(path: Path = MANIFEST) -> dict[str, float]:
    """Own compile seconds (callees excluded) of every function a recorded kernel links.

    Keyed as in the entries' ``closure``: core kernels and numba's own
    overloads, per signature. {} for a list recorded without them.
    """
    try:
        return {k: float(v) for k, v in
                json.loads(path.read_text(encoding="utf-8"))["own_seconds"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _key(disp) -> str:
    """``module:qualname`` of a dispatcher's Python function (a serial twin has its own)."""
    f = disp.py_func
    return f"{f.__module__}:{f.__qualname__}"


def _members(e: dict, own: dict[str, float]) -> dict[str, float]:
    """What compiling entry ``e`` costs in a fresh process: function key -> own seconds."""
    if own and e.get("closure"):
        return {k: own.get(k, 0.0) for k in e["closure"]}
    return {e["kernel"]: float(e.get("seconds", 0.0))}


def assign(entries: list[dict], n: int, own: dict[str, float] | None = None) -> list[list[dict]]:
    """Split ``entries`` over ``n`` workers so that each compiles about as long.

    Greedy, longest first: each group goes to the worker where it ends
    earliest. A group is a batch kernel's serial and threaded twins
    (``name.serial``, ``name.parallel``) or a kernel alone, and groups
    whose closures share more than :data:`SHARED` of the smaller one's
    seconds are one group. With ``own``
    (:func:`load_own_seconds`) a group costs the own seconds of the kernels
    in its recorded ``closure`` (:class:`Recorder`) that its worker has not
    compiled yet, so kernels
    sharing a large callee (the index's query, C's scan, the Kneser-Ney
    walk) meet in one process instead of compiling it twice; without it, an
    entry costs its recorded ``seconds``. Every entry comes back with
    ``"cost"``, its seconds in its worker.

    Measured with an empty cache on the 2-core development machine: by
    recorded seconds alone the list split into parts that took 24.5 s and
    29.2 s each compiled alone (the index's query in both, 8.3 and 7.8 s);
    by closures, 21.3 s and 21.2 s. Run together the gain is smaller,
    because a process loads a callee from numba's cache when the other one
    saved it first: 20.1 / 22.1 / 23.5 s before, 20.5 / 20.6 / 22.9 s after
    (three alternated runs of the whole parallel compilation).
    """
    own = own or {}
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(e["kernel"].split(".serial")[0].split(".parallel")[0], []).append(e)
    members = {id(e): _members(e, own) for e in entries}

    def union(g: list[dict]) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in g:
            out.update(members[id(e)])
        return out

    # groups sharing most of the smaller one's cost compile together: placed
    # apart, each worker would pay for the shared callees
    clusters = list(groups.values())
    merged = True
    while merged:
        merged = False
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                ua, ub = union(clusters[a]), union(clusters[b])
                shared = sum(c for k, c in ua.items() if k in ub)
                if shared > SHARED * min(sum(ua.values()), sum(ub.values())):
                    clusters[a] = clusters[a] + clusters.pop(b)
                    merged = True
                    break
            if merged:
                break
    parts: list[list[dict]] = [[] for _ in range(n)]
    done: list[set[str]] = [set() for _ in range(n)]
    load = [0.0] * n
    for g in sorted(clusters, key=lambda g: -sum(union(g).values())):
        u = union(g)
        extra = [sum(c for k, c in u.items() if k not in done[i]) for i in range(n)]
        i = min(range(n), key=lambda i: (load[i] + extra[i], load[i]))
        for e in g:
            cost = sum(c for k, c in members[id(e)].items() if k not in done[i])
            done[i].update(members[id(e)])
            parts[i].append(dict(e, cost=round(cost, 3)))
            load[i] += cost
    return parts


def _claim(folder: Path, name: str) -> bool:
    """Whether this process is the first to claim ``name`` in ``folder`` (an exclusive create)."""
    try:
        os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _work_list(part: int, of: int, manifest: Path) -> tuple[list[dict], Path | None]:
    """The entries worker ``part`` goes through, and the folder of claims (None: no stealing).

    From a list :func:`compile_parallel` wrote (with its ``parts``): the
    worker's own part in order, then the other parts' entries from their
    ends, each compiled by whichever worker claims it first
    (:func:`_claim`). The recorded seconds that balance the parts are
    measured alone in one process and miss by a second or more run two at
    a time (two parts recorded at 13.1 s each took 13.2-13.4 s and
    14.9-15.2 s together on two cores); a worker done early takes the
    other's last kernels instead of waiting. Otherwise (a recorded list):
    the part alone.
    """
    try:
        parts = json.loads(manifest.read_text(encoding="utf-8"))["parts"]
    except (OSError, ValueError, KeyError):
        return assign(load_manifest(manifest), of, load_own_seconds(manifest))[part], None
    mine = [dict(e, claim=f"{part}-{i}") for i, e in enumerate(parts[part])]
    rest = [dict(e, claim=f"{j}-{i}") for j, p in enumerate(parts) if j != part
            for i, e in reversed(list(enumerate(p)))]
    claims = manifest.parent / "claims"
    claims.mkdir(exist_ok=True)
    return mine + rest, claims


def _compile_part(part: int, of: int, log: Path, manifest: Path) -> int:
    """Worker: compile this part's entries (and others' left), one line per kernel to ``log``."""
    entries, claims = _work_list(part, of, manifest)
    with open(log, "a", encoding="utf-8", buffering=1) as fh:
        for e in entries:
            if claims is not None and not _claim(claims, e["claim"]):
                continue
            fh.write(f"begin {e['cost']} {e['kernel']}\n")
            try:
                disp = resolve(e["kernel"])
                for s in e["sigs"]:
                    disp.compile(pickle.loads(base64.b64decode(s)))
                fh.write(f"ok {e['cost']} {e['kernel']}\n")
            except Exception as exc:  # noqa: BLE001 - a stale entry: the workload compiles it
                fh.write(f"skip {e['cost']} {e['kernel']} {type(exc).__name__}\n")
    return 0


def compile_parallel(workers: int, progress: Callable[[float], None] | None = None,
                     cancel: Callable[[], bool] | None = None,
                     entries: list[dict] | None = None) -> int:
    """Compile the recorded kernels in ``workers`` processes into numba's cache.

    Parameters
    ----------
    workers : int
        Processes to start (each compiles about 1/workers of the seconds).
    progress : callable, optional
        ``progress(fraction)`` every 0.1 s: the recorded seconds of the kernels
        compiled, plus the time so far of those being compiled (each up to its
        recorded seconds), over the recorded total.
    cancel : callable, optional
        Polled every 0.1 s; the workers are killed and
        :class:`core.corpus.Cancelled` raised.
    entries : list of dict, optional
        The list to compile (default: :func:`load_manifest`).

    Returns
    -------
    int
        Kernels compiled (or found in the cache) by the workers.
    """
    from core.corpus import Cancelled

    entries = load_manifest() if entries is None else entries
    if not entries or workers < 1:
        return 0
    parts = assign(entries, workers, load_own_seconds())
    total = sum(float(e["cost"]) for p in parts for e in p) or 1.0
    with tempfile.TemporaryDirectory(prefix="noisekey-compile-") as tmp:
        man = Path(tmp) / "signatures.json"
        man.write_text(json.dumps({"parts": parts}), encoding="utf-8")
        logs = [Path(tmp) / f"part-{i}.log" for i in range(workers)]
        procs = [subprocess.Popen(
            [sys.executable, "-m", "core.precompile", "--part", str(i), "--of", str(workers),
             "--manifest", str(man), "--log", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, log in enumerate(logs)]
        begun: dict[tuple[int, str], float] = {}  # (worker, kernel) -> when first seen
        try:
            while True:
                running = any(p.poll() is None for p in procs)
                done, ok = 0.0, 0
                now = time.perf_counter()
                for w, log in enumerate(logs):
                    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
                    finished = {ln.split()[2] for ln in lines
                                if ln.startswith(("ok ", "skip ")) and len(ln.split()) > 2}
                    for ln in lines:
                        word = ln.split()
                        if len(word) < 3:
                            continue
                        if word[0] in ("ok", "skip"):
                            done += float(word[1])
                            ok += word[0] == "ok"
                        elif word[2] not in finished:
                            # in flight: count its time so far, up to its recorded seconds
                            t0 = begun.setdefault((w, word[2]), now)
                            done += min(now - t0, 0.95 * float(word[1]))
                if progress is not None:
                    progress(min(done / total, 1.0))
                if not running:
                    return ok
                if cancel is not None and cancel():
                    raise Cancelled("cancelled while compiling kernels")
                time.sleep(POLL_S)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m core.precompile", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--record", action="store_true",
                    help=f"rewrite {MANIFEST.name} from a warm-up with an empty numba cache")
    ap.add_argument("--record-here", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--part", type=int)
    ap.add_argument("--of", type=int)
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--log", type=Path)
    a = ap.parse_args(argv)
    if a.record:
        record()
        return 0
    if a.record_here:
        _record_here(a.record_here)
        return 0
    if a.part is None or a.of is None or not 0 <= a.part < a.of:
        ap.error("give --record, or --part I --of N with 0 <= I < N")
    return _compile_part(a.part, a.of, a.log or Path(os.devnull), a.manifest)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
