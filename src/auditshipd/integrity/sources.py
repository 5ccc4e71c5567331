"""Read what a customer holds as lines in received order: JSON Lines files (gzipped or
not), directories of them (S3 objects as downloaded, walked in key order), or standard
input (``-``)."""

from __future__ import annotations

import gzip
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["MANIFEST_SUFFIX", "iter_records", "list_inputs", "rotation_order"]

MANIFEST_SUFFIX = ".manifest.json"


# A file the file sink rotated away: PATH.<UTC time>, e.g. siem.jsonl.20240501T120000.123456Z
# (maybe gzipped since). Its events come before those of PATH, the file written now.
_ROTATED = re.compile(r"(?P<base>.+)\.(?P<stamp>\d{8}T\d{6}(?:\.\d+)?Z)(?:\.gz)?")


def list_inputs(paths: list[str]) -> list[str]:
    """Files in reading order: each directory expanded to its files sorted by path
    (manifests and public keys left out: they are read beside their file), then each
    file sink's rotated files (``PATH.<stamp>``, oldest first) moved before ``PATH``."""
    out: list[str] = []
    for p in paths:
        if p != "-" and os.path.isdir(p):
            files = sorted(str(f) for f in Path(p).rglob("*") if f.is_file())
            out.extend(f for f in files if not f.endswith((MANIFEST_SUFFIX, ".pub")))
        else:
            out.append(p)
    return rotation_order(out)


def rotation_order(files: list[str]) -> list[str]:
    """``files`` with each ``PATH`` and its rotated ``PATH.<stamp>`` files read together,
    where the first of them stands: the rotated ones by time, then ``PATH``. Other files
    keep their places."""
    keys: list[tuple[int, int, str, int]] = []
    first: dict[str, int] = {}  # group (PATH) -> position of its first member
    for i, f in enumerate(files):
        m = _ROTATED.fullmatch(f) if f != "-" else None
        group = os.path.normpath(m["base"] if m else f) if f != "-" else f"-{i}"
        pos = first.setdefault(group, i)
        keys.append((pos, 0 if m else 1, m["stamp"] if m else "", i))
    order = sorted(range(len(files)), key=keys.__getitem__)
    return [files[i] for i in order]


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def iter_records(path: str) -> Iterator[tuple[str, bytes | None, str | None, int]]:
    """``(where, line, error, nbytes)`` per non-empty line of ``path``, the line's exact
    bytes (hashes cover them); ``line`` is None when the file cannot be read."""
    name = "<stdin>" if path == "-" else path
    try:
        data = _read(path)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        yield name, None, f"cannot read: {exc}", 0
        return
    for i, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            yield f"{name}:{i}", line, None, len(line) + 1
