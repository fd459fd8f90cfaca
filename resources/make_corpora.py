"""Regenerate the corpora shipped in resources/ from files already on the machine.

Nothing is downloaded. Run from the repository root::

    python resources/make_corpora.py            # default corpus + samples
    python resources/make_corpora.py --debian   # + corpora/ from Debian packages
    python resources/make_corpora.py --large OUTDIR   # only the large corpora below


Sources (see resources/README.md for licenses):

- ``default_corpus.txt``: Python's ``pydoc_data.topics`` (PSF license), every
  topic in sorted key order, each topic one paragraph (its internal blank lines
  dropped, lines kept as they are), topics separated by one blank line.
- ``samples/python_docs.txt``: the topics ``if``, ``while``, ``for``, ``try``
  and ``with`` with their own paragraphs kept (running text, ~200 lines).
- ``samples/builtins.tsv``: Python builtin name -> first sentence of its
  docstring (pairs).
- ``corpora/wordnet_glosses.tsv`` (``--debian``, package ``wordnet-base``):
  "word (pos)" -> gloss of its most frequent sense (first sense in WordNet's
  index); single-word lemmas of nouns, verbs, adjectives and adverbs with at
  least one sense-tagged occurrence in WordNet's SemCor counts (the commonly
  used words; keeps the file < 3 MB); the gloss up to its first ";".
- ``corpora/fortunes.txt`` (``--debian``, packages ``fortunes-min`` or
  ``fortune-mod``): the quotations, one paragraph each.

Large corpora, built but never shipped (``--large OUTDIR`` writes only these,
not the shipped files; ``apt-get install -y dict-gcide dict-foldoc fortunes`` first):

- ``OUTDIR/gcide_text.txt``: the definitions of ``gcide.tsv`` as running
  text, one a line, a blank line after every five (7.3M word tokens): the
  multi-million-token running-text corpus of the training figures.
- ``OUTDIR/quotations.txt`` (package ``fortunes``, BSD): every fortune file
  (the shipped three and 40-odd more), one quotation a paragraph, as
  ``corpora/fortunes.txt`` is made (about 0.5M word tokens).
- ``OUTDIR/gcide.tsv`` (package ``dict-gcide``, GPL-2+): headword ->
  definition text, one row per entry of the Collaborative International
  Dictionary of English (``/usr/share/dictd/gcide.dict.dz``, entries located
  by ``gcide.index``, in file order). The ``00-database-*`` header entries
  are skipped; the entry starts at its first line of the form ``Headword
  \\pro*nun*ci*a"tion\\, pos.`` (a few index spans begin with the tail of the
  previous entry, which is dropped; entries without such a line are
  skipped); the headword is the text before the pronunciation, the
  definition everything after it; source tags such as ``[1913 Webster]`` or
  ``[WordNet 1.5 +PJC]`` and whole-line tags like ``[AS]`` are dropped, cross
  reference braces ``{Jury}`` keep their text, and tabs and newlines are
  collapsed to single spaces. About 126,000 rows, a few million word tokens.
- ``OUTDIR/foldoc.tsv`` (package ``dict-foldoc``, GFDL / free): term -> its
  definition text, one row per entry of the Free On-line Dictionary of
  Computing, cleaned the same way (braces dropped, the closing date line such
  as ``(1995-01-24)`` dropped).
"""

from __future__ import annotations

import argparse
import builtins
import gzip
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_BYTES = 3 * 1024 * 1024


def topics_text(keys: list[str] | None = None, keep_paragraphs: bool = False) -> str:
    import pydoc_data.topics as t

    out = []
    for key in keys or sorted(t.topics):
        lines = [line.rstrip() for line in t.topics[key].splitlines()]
        if keep_paragraphs:
            body = "\n".join(lines).strip("\n")
            body = re.sub(r"\n{3,}", "\n\n", body)
        else:
            body = "\n".join(line for line in lines if line.strip())
        out.append(body)
    return "\n\n".join(out) + "\n"


def builtins_pairs() -> str:
    rows = []
    for name in sorted(dir(builtins)):
        obj = getattr(builtins, name)
        doc = getattr(obj, "__doc__", None)
        if name.startswith("_") or not doc:
            continue
        paras = [p.strip() for p in doc.strip().split("\n\n")]
        text = next((p for p in paras if "->" not in p and not p.startswith(name + "(")), "")
        text = " ".join(text.split())
        if not text:
            continue
        sentence = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
        rows.append(f"{name}\t{sentence}")
    return "input\toutput\n" + "\n".join(rows) + "\n"


WN_DIR = Path("/usr/share/wordnet")
WN_POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}


def wordnet_glosses() -> str:
    """word -> gloss of its first (most frequent) sense, one row per lemma and part of speech."""
    rows = []
    for pos in WN_POS:
        data = (WN_DIR / f"data.{pos}").read_bytes().decode("utf-8", errors="replace")
        gloss_at: dict[int, str] = {}
        for line in data.splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            offset = int(line.split(" ", 1)[0])
            gloss = line.split("|", 1)[1].strip()
            gloss = gloss.split(";")[0].strip()
            gloss_at[offset] = gloss
        index = (WN_DIR / f"index.{pos}").read_text("utf-8", errors="replace")
        for line in index.splitlines():
            if line.startswith("  "):
                continue
            f = line.split()
            lemma, n_synsets = f[0], int(f[2])
            first, tagged = int(f[-n_synsets]), int(f[-n_synsets - 1])
            if "_" in lemma or not lemma.isalpha() or tagged == 0:
                continue
            gloss = gloss_at.get(first)
            if gloss:
                rows.append(f"{lemma} ({pos})\t{gloss}")
    return "input\toutput\n" + "\n".join(rows) + "\n"


FORTUNE_DIRS = (Path("/usr/share/games/fortunes"), Path("/usr/share/fortune"))


#: The files of Debian's fortunes-min, the shipped quotations; the package
#: ``fortunes`` adds 40-odd more (the large quotations corpus).
FORTUNES_MIN = ("fortunes", "literature", "riddles")


def fortunes(names: tuple[str, ...] | None = FORTUNES_MIN) -> str:
    """The quotations of the fortune files ``names`` (None: every one), a paragraph each."""
    quotes = []
    for d in FORTUNE_DIRS:
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.suffix or f.is_dir() or f.name.startswith("."):
                continue
            if names is not None and f.name not in names:
                continue
            text = f.read_bytes().decode("utf-8", errors="replace")
            for q in text.split("\n%\n"):
                lines = [line.rstrip() for line in q.strip("%\n").splitlines() if line.strip()]
                if lines:
                    quotes.append("\n".join(lines))
        break
    return "\n\n".join(quotes) + "\n"


def debian_license(
    copyright_file: Path, start: str, end: str, header: str, dedent: bool = True
) -> str:
    """The license text between ``start`` and ``end`` in a Debian copyright file."""
    text = copyright_file.read_text("utf-8", errors="replace")
    i = text.index(start)
    j = text.index(end, i) + len(end)
    body = "\n".join(line[1:] if dedent and line.startswith(" ") else line
                     for line in text[i:j].splitlines())
    return header + "\n\n" + body.replace("\n.\n", "\n\n").strip() + "\n"


DICTD_DIR = Path("/usr/share/dictd")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# whole-line source tags of GCIDE: [1913 Webster], [WordNet 1.5 +PJC], [AS], ...
_SOURCE_LINE = re.compile(
    r"^\s*\[(?:[^\]]*(?:Webster|WordNet|PJC|Century|Chambers)[^\]]*"
    r"|[A-Z]{2,4}\.?(?:\s*\+\s*[A-Z]{2,4}\.?)*)\]\s*$"
)
_SOURCE_TAG = re.compile(r"\[[^\[\]]*(?:Webster|WordNet|PJC|Century Dict)[^\[\]]*\]")
# an entry's first line: ``Abjure \Ab*jure"\, v. t.`` at the start of a line
_HEAD_LINE = re.compile(r"^(\S[^\n\\]*?) \\[^\n]*?\\", re.M)
_DATE_LINE = re.compile(r"^\s*\(\d{4}-\d{2}-\d{2}\)\s*$")


def _b64(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def dictd_entries(name: str) -> list[str]:
    """The entries of a dictd database, in file order, header entries skipped.

    ``name.index`` lists ``headword<TAB>offset<TAB>length`` (base64 numbers)
    into the uncompressed ``name.dict.dz``; several headwords may share one
    entry, which is read once.
    """
    data = gzip.open(DICTD_DIR / f"{name}.dict.dz").read()
    spans: set[tuple[int, int]] = set()
    for line in (DICTD_DIR / f"{name}.index").read_text("utf-8", errors="replace").splitlines():
        f = line.split("\t")
        if len(f) != 3 or f[0].startswith("00-"):
            continue
        spans.add((_b64(f[1]), _b64(f[2])))
    return [data[o:o + n].decode("utf-8", errors="replace") for o, n in sorted(spans)]


def _clean(lines: list[str], drop: re.Pattern, tags: re.Pattern | None = None) -> str:
    text = " ".join(line for line in lines if not drop.match(line))
    if tags is not None:
        text = tags.sub(" ", text)
    text = text.replace("{", "").replace("}", "")
    return " ".join(text.split())


def gcide_pairs() -> str:
    """headword -> definition text of every GCIDE entry (see the module docstring)."""
    rows = []
    for entry in dictd_entries("gcide"):
        # a few index spans start with the tail of the previous entry: skip to
        # the first headword line; the 1 or 2 without one are dropped
        m = _HEAD_LINE.search(entry)
        if m is None:
            continue
        head = " ".join(m.group(1).split())
        first, _, rest = entry[m.end():].partition("\n")
        body = _clean([first.lstrip(", "), *rest.splitlines()], _SOURCE_LINE, _SOURCE_TAG)
        if head and body:
            rows.append(f"{head}\t{body}")
    return "input\toutput\n" + "\n".join(rows) + "\n"


def foldoc_pairs() -> str:
    """term -> definition text of every FOLDOC entry (see the module docstring)."""
    rows = []
    for entry in dictd_entries("foldoc"):
        first, _, rest = entry.strip("\n").partition("\n")
        head = " ".join(first.split())
        body = _clean(rest.splitlines(), _DATE_LINE)
        if head and body:
            rows.append(f"{head}\t{body}")
    return "input\toutput\n" + "\n".join(rows) + "\n"


def running_text(pairs: str, lines_per_paragraph: int = 5) -> str:
    """A pairs file's outputs as running text: one a line, a blank line after every five."""
    out = []
    for i, row in enumerate(pairs.splitlines()[1:], 1):  # [0]: the header
        out.append(row.partition("\t")[2])
        if i % lines_per_paragraph == 0:
            out.append("")
    return "\n".join(out) + "\n"


def write_large(path: Path, text: str) -> None:
    """Write a large (never shipped) corpus; print its rows and bytes."""
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"wrote {path} ({text.count(chr(10)) - 1:,} rows, {len(data):,} bytes)",
          file=sys.stderr)


def write(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise SystemExit(f"{path}: {len(data)} bytes, over the 3 MB limit")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"wrote {path.relative_to(HERE.parent)} ({len(data):,} bytes)", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--debian", action="store_true", help="also build corpora/ from Debian data")
    ap.add_argument("--large", metavar="OUTDIR", type=Path, default=None,
                    help="only build the large unshipped corpora gcide.tsv, gcide_text.txt, "
                    "foldoc.tsv and quotations.txt into OUTDIR "
                    "(apt-get install -y dict-gcide dict-foldoc fortunes)")
    args = ap.parse_args()
    if args.large is not None:
        built = False
        for name, make in (("gcide", gcide_pairs), ("foldoc", foldoc_pairs)):
            if (DICTD_DIR / f"{name}.dict.dz").is_file():
                text = make()
                write_large(args.large / f"{name}.tsv", text)
                if name == "gcide":  # the same words as running text, no pairs
                    write_large(args.large / "gcide_text.txt", running_text(text))
                built = True
            else:
                print(f"{name} not found: apt-get install -y dict-{name}", file=sys.stderr)
        text = fortunes(None)
        if text.count("\n\n") > 5_000:  # fortunes-min alone holds 821 quotations
            write_large(args.large / "quotations.txt", text)
            built = True
        else:
            print("the full fortunes not found: apt-get install -y fortunes", file=sys.stderr)
        if not built:
            raise SystemExit(1)
        return
    write(HERE / "default_corpus.txt", topics_text())
    write(
        HERE / "samples" / "python_docs.txt",
        topics_text(["if", "while", "for", "try", "with"], keep_paragraphs=True),
    )
    write(HERE / "samples" / "builtins.tsv", builtins_pairs())
    if args.debian:
        if WN_DIR.is_dir():
            write(HERE / "corpora" / "wordnet_glosses.tsv", wordnet_glosses())
            write(HERE / "corpora" / "LICENSE-wordnet", debian_license(
                Path("/usr/share/doc/wordnet-base/copyright"), "This software and database",
                "advertising or publicity pertaining to distribution of the software\n and/or "
                "database.  Title to copyright in this software, database and\n any associated "
                "documentation shall at all times remain with\n Princeton University and "
                "LICENSEE agrees to preserve same.",
                "WordNet 3.0 license (applies to wordnet_glosses.tsv, derived from the\n"
                "WordNet 3.0 database as packaged by Debian in wordnet-base)"))
        else:
            print("WordNet not found: apt-get install -y wordnet-base", file=sys.stderr)
        text = fortunes()
        if text.strip():
            write(HERE / "corpora" / "fortunes.txt", text)
            write(HERE / "corpora" / "LICENSE-fortunes", debian_license(
                Path("/usr/share/doc/fortunes-min/copyright"), "Copyright (c) 1991 The Regents",
                "SUCH DAMAGE.",
                "License of fortunes.txt (the fortunes, literature and riddles files of\n"
                "BSD fortune(6), as packaged by Debian in fortunes-min)", dedent=False))
        else:
            print("fortunes not found: apt-get install -y fortunes-min", file=sys.stderr)


if __name__ == "__main__":
    main()
