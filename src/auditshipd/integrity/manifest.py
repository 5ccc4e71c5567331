"""Signed manifests of portal exports: what was asked (filters, time range), what was
given (row count, SHA-256 of the exact bytes), when, and by which key.

```
{"version": 1, "kind": "auditshipd.export-manifest", "format": "csv" | "jsonl",
 "filters": {...}, "since": TIME | null, "until": TIME | null, "rows": N,
 "sha256": HEX, "bytes": N, "signed_at": TIME, "key_id": ID, "signature": BASE64}
```

The signature is Ed25519 over the canonical form of the manifest without
``signature``. It is kept beside the export as ``<export file>.manifest.json``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .digest import rfc3339, signed_payload
from .keys import PublicKey, SigningKey
from .sources import MANIFEST_SUFFIX

__all__ = ["ExportCheck", "ManifestBuilder", "verify_export"]

KIND = "auditshipd.export-manifest"


class ManifestBuilder:
    """Fed the export's bytes as they are streamed; :meth:`sign` at the end."""

    def __init__(self, fmt: str, filters: dict[str, Any], since: str | None,
                 until: str | None):
        self.fmt, self.filters, self.since, self.until = fmt, filters, since, until
        self._sha = hashlib.sha256()
        self.bytes = 0
        self.rows = 0

    def update(self, chunk: bytes, rows: int) -> None:
        self._sha.update(chunk)
        self.bytes += len(chunk)
        self.rows += rows

    def sign(self, key: SigningKey, now: float | None = None) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "version": 1, "kind": KIND, "format": self.fmt, "filters": self.filters,
            "since": self.since, "until": self.until, "rows": self.rows,
            "sha256": self._sha.hexdigest(), "bytes": self.bytes,
            "signed_at": rfc3339(time.time() if now is None else now), "key_id": key.key_id,
        }
        manifest["signature"] = key.sign(signed_payload(manifest))
        return manifest


@dataclass
class ExportCheck:
    path: str
    problems: list[str] = field(default_factory=list)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return self.problems or [self.summary]


def _rows(data: bytes, fmt: str) -> int:
    if fmt == "csv":
        import csv
        import io

        return max(0, sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8")))) - 1)
    return sum(1 for line in data.split(b"\n") if line.strip())


def verify_export(path: str, keys: Iterable[PublicKey]) -> ExportCheck:
    """Check ``path`` against ``path.manifest.json``: signature, key, size, SHA-256, rows."""
    check = ExportCheck(path)
    mpath = path + MANIFEST_SUFFIX
    try:
        # Strict JSON (no NaN, no number out of range, no lone surrogate): anything
        # else cannot have been signed, and has no canonical form to check.
        manifest = msgspec.json.decode(Path(mpath).read_bytes())
        data = Path(path).read_bytes()
    except (OSError, msgspec.DecodeError) as exc:
        check.problems.append(f"{mpath}: unreadable: {exc}")
        return check
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        check.problems.append(f"{mpath}: unreadable: not an export manifest")
        return check
    by_id = {k.key_id: k for k in keys}
    key = by_id.get(str(manifest.get("key_id")))
    if key is None:
        check.problems.append(f"{mpath}: unknown-key: signed with key {manifest.get('key_id')}")
        return check
    try:
        signature = base64.b64decode(str(manifest.get("signature")), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not key.verify(signature, signed_payload(manifest)):
        check.problems.append(f"{mpath}: bad-signature: the manifest does not verify with key"
                              f" {key.key_id}")
        return check
    if len(data) != manifest.get("bytes") or hashlib.sha256(data).hexdigest() != manifest.get(
            "sha256"):
        check.problems.append(f"{path}: modified: {len(data)} bytes whose SHA-256 differs from"
                              f" the manifest's ({manifest.get('bytes')} bytes)")
        return check
    try:
        rows = _rows(data, str(manifest.get("format")))
    except UnicodeDecodeError:
        rows = -1
    if rows != manifest.get("rows"):
        check.problems.append(f"{path}: modified: {rows} rows, manifest says"
                              f" {manifest.get('rows')}")
        return check
    check.summary = (f"OK: export {path}: {rows} rows, {len(data)} bytes, filters"
                     f" {json.dumps(manifest.get('filters'), sort_keys=True)}, since"
                     f" {manifest.get('since')} until {manifest.get('until')}, signed"
                     f" {manifest.get('signed_at')} by {key.key_id}")
    return check
