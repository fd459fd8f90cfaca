"""Generators of bad corpus files for the corpus and CLI tests (all small)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def png_bytes(width: int = 16, height: int = 16) -> bytes:
    """A real, valid PNG image (grey gradient)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes((x * 16) % 256 for x in range(width)) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def make(tmp: Path, kind: str) -> Path:
    """Write one bad input of ``kind`` under ``tmp`` and return its path."""
    if kind == "empty":
        p = tmp / "empty.txt"
        p.write_bytes(b"")
    elif kind == "blank":
        p = tmp / "blank.txt"
        p.write_text("\n   \n\t\n")
    elif kind == "png":
        p = tmp / "picture.txt"
        p.write_bytes(png_bytes())
    elif kind == "utf16":
        p = tmp / "wide.txt"
        p.write_bytes("hello world\n".encode("utf-16"))
    elif kind == "tsv_one_column":
        p = tmp / "pairs.tsv"
        p.write_text("hello\tworld\nhow are you\tfine\njust one column\nx\ty\n")
    elif kind == "csv_one_column":
        p = tmp / "pairs.csv"
        p.write_text('input,output\n"a, b",c\nlonely\n')
    elif kind == "csv_three_columns":
        p = tmp / "three.csv"
        p.write_text("a,b\nc,d,e\n")
    elif kind == "jsonl_malformed":
        p = tmp / "pairs.jsonl"
        p.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "response": \n')
    elif kind == "jsonl_fields":
        p = tmp / "fields.jsonl"
        p.write_text('{"input": "a", "output": "b"}\n{"term": "c", "gloss": "d"}\n')
    elif kind == "jsonl_not_object":
        p = tmp / "list.jsonl"
        p.write_text('["a", "b"]\n')
    elif kind == "tsv_empty_output":
        p = tmp / "half.tsv"
        p.write_text("a\tb\nc\t  \n")
    elif kind == "missing":
        p = tmp / "does-not-exist.txt"
    elif kind == "empty_folder":
        p = tmp / "nothing-here"
        p.mkdir()
        (p / "notes.md").write_text("not a corpus extension\n")
        (p / ".hidden.txt").write_text("hidden\n")
    else:
        raise ValueError(kind)
    return p


# kind -> (line expected in the error or None, words the reason must contain)
EXPECTED = {
    "empty": (None, "empty file"),
    "blank": (None, "no text"),
    "png": (3, "binary"),
    "utf16": (1, "UTF-16"),
    "tsv_one_column": (3, "found 1"),
    "csv_one_column": (3, "found 1"),
    "csv_three_columns": (2, "found 3"),
    "jsonl_malformed": (3, "invalid JSON"),
    "jsonl_fields": (2, "'prompt'/'response'"),
    "jsonl_not_object": (1, "JSON object"),
    "tsv_empty_output": (2, "empty output"),
    "missing": (None, "no such file"),
    "empty_folder": (None, "no corpus files"),
}
