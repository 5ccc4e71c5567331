"""Read what a customer holds as records in received order: JSON Lines files (gzipped
or not, a JSON array also accepted), directories of them (S3 objects as downloaded,
walked in key order), or standard input (``-``)."""

from __future__ import annotations

import gzip
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["MANIFEST_SUFFIX", "iter_records", "list_inputs"]

MANIFEST_SUFFIX = ".manifest.json"
_decode = msgspec.json.Decoder().decode


def list_inputs(paths: list[str]) -> list[str]:
    """Files in reading order: each directory expanded to its files sorted by path
    (manifests and public keys left out: they are read beside their file)."""
    out: list[str] = []
    for p in paths:
        if p != "-" and os.path.isdir(p):
            files = sorted(str(f) for f in Path(p).rglob("*") if f.is_file())
            out.extend(f for f in files if not f.endswith((MANIFEST_SUFFIX, ".pub")))
        else:
            out.append(p)
    return out


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def iter_records(path: str) -> Iterator[tuple[str, Any, str | None, int]]:
    """``(where, record, error, nbytes)`` per line of ``path``; ``record`` is None when
    the line is not JSON (``error`` says why). Empty lines are skipped."""
    name = "<stdin>" if path == "-" else path
    try:
        data = _read(path)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        yield name, None, f"cannot read: {exc}", 0
        return
    if data.lstrip()[:1] == b"[":
        try:
            items = _decode(data)
        except msgspec.DecodeError as exc:
            yield f"{name}:1", None, f"not JSON: {exc}", len(data)
            return
        for i, item in enumerate(items, 1):
            yield f"{name}[{i}]", item, None, len(data) // max(len(items), 1)
        return
    for i, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            yield f"{name}:{i}", _decode(line), None, len(line) + 1
        except msgspec.DecodeError as exc:
            yield f"{name}:{i}", None, f"not JSON: {exc}", len(line) + 1
