"""Signed export manifests: `verify` on an export with its manifest beside it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from auditshipd.integrity.keys import generate_key
from auditshipd.integrity.manifest import ManifestBuilder

AUDITSHIPD = str(Path(sys.executable).parent / "auditshipd")


def write_export(tmp_path: Path, key, fmt: str = "jsonl") -> Path:
    rows = [b'{"id":"a","action":"user.login"}\n', b'{"id":"b","action":"user.logout"}\n']
    if fmt == "csv":
        rows = [b"id,action\r\n", b"a,user.login\r\n", b"b,user.logout\r\n"]
    builder = ManifestBuilder(fmt, {"action": "user.*"}, "2024-05-01T00:00:00Z", None)
    for i, chunk in enumerate(rows):
        builder.update(chunk, 0 if fmt == "csv" and i == 0 else 1)
    path = tmp_path / f"export.{fmt}"
    path.write_bytes(b"".join(rows))
    (tmp_path / f"export.{fmt}.manifest.json").write_text(json.dumps(builder.sign(key)))
    return path


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUDITSHIPD, "verify", *args], capture_output=True, text=True,
                          timeout=60)


def test_export_with_manifest_verifies_then_edits_fail(tmp_path):
    """A JSONL and a CSV export verify against their manifests (rows, bytes, filters in
    the summary); one changed byte fails as modified; a manifest re-signed by a key the
    verifier does not know fails as unknown-key."""
    key = generate_key(tmp_path / "k")
    other = generate_key(tmp_path / "other")
    for fmt in ("jsonl", "csv"):
        path = write_export(tmp_path, key, fmt)
        ok = verify("--public-key", str(tmp_path / "k.pub"), str(path))
        assert ok.returncode == 0, ok.stdout
        assert "2 rows" in ok.stdout and '"action": "user.*"' in ok.stdout
        data = bytearray(path.read_bytes())
        data[5] ^= 1
        path.write_bytes(bytes(data))
        bad = verify("--public-key", str(tmp_path / "k.pub"), str(path))
        assert bad.returncode == 1 and "modified" in bad.stdout
    path = write_export(tmp_path, other)
    forged = verify("--public-key", str(tmp_path / "k.pub"), str(path))
    assert forged.returncode == 1 and "unknown-key" in forged.stdout


def test_manifest_that_is_not_strict_json_is_reported_not_a_traceback(tmp_path):
    """A manifest edited to hold what JSON does not allow (NaN, Infinity, a number out
    of range, a lone surrogate) cannot have been signed: verify names the manifest as
    unreadable (exit 1) instead of crashing while it recomputes the signed form."""
    key = generate_key(tmp_path / "k")
    path = write_export(tmp_path, key)
    mpath = Path(f"{path}.manifest.json")
    signed = mpath.read_text()
    rows = f'"rows": {json.loads(signed)["rows"]}'
    for forged in ('"rows": NaN', '"rows": Infinity', '"rows": 1e400', '"rows": "\\ud800"'):
        mpath.write_text(signed.replace(rows, forged))
        out = verify("--public-key", str(tmp_path / "k.pub"), str(path))
        assert out.returncode == 1, (forged, out.stderr)
        assert f"{mpath}: unreadable: " in out.stdout, (forged, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr, forged
