"""`auditshipd keygen` and `auditshipd verify` as a customer runs them, and the reference
verifier printed in docs/integrity.md (extracted from the doc and run)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import msgspec
from tests.helpers.integrity_stream import build_stream

from auditshipd.integrity.keys import load_signing_key

ROOT = Path(__file__).resolve().parents[2]
EXE = [str(Path(sys.executable).parent / "auditshipd")]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=60)


def keygen(tmp_path: Path, name: str = "k"):
    out = run("keygen", "--out", str(tmp_path / name))
    assert out.returncode == 0, out.stderr
    return load_signing_key(str(tmp_path / name)), out.stdout


def test_keygen_prints_the_public_key_and_refuses_to_overwrite(tmp_path):
    """keygen creates a 0600 private key, prints its key id and public key; a second run
    on the same file exits 2 and leaves the key untouched."""
    key, stdout = keygen(tmp_path)
    assert key.key_id in stdout and key.public.base64() in stdout
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o600
    before = (tmp_path / "k").read_bytes()
    again = run("keygen", "--out", str(tmp_path / "k"))
    assert again.returncode == 2 and "exists" in again.stderr
    assert (tmp_path / "k").read_bytes() == before


def test_verify_file_and_stdin_ok_then_tampered(tmp_path):
    """verify exits 0 with a one-line summary on an intact file and on stdin; after a
    deletion it exits 1 naming the gap with its seq and line."""
    key, _ = keygen(tmp_path)
    built = build_stream(key, 20)
    f = tmp_path / "out.jsonl"
    f.write_bytes(built.jsonl())
    at = "2024-05-01T12:06:00Z"  # 1.5 intervals after the final digest
    ok = run("verify", "--public-key", str(tmp_path / "k.pub"), "--now", at, str(f))
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.count("\n") == 1 and ok.stdout.startswith("OK: stream siem: 20 events")
    piped = run("verify", "--public-key", str(tmp_path / "k.pub"), "--now", at, "-",
                stdin=built.jsonl())
    assert piped.returncode == 0, piped.stdout
    victim = built.event_indexes()[7]
    f.write_bytes(b"".join(x + b"\n" for i, x in enumerate(built.lines) if i != victim))
    bad = run("verify", "--public-key", str(tmp_path / "k.pub"), "--now", at, str(f))
    assert bad.returncode == 1
    assert re.search(rf"out.jsonl:{victim + 1}: gap: missing events: seq 8 ", bad.stdout)


def test_verify_of_a_directory_without_files_is_a_usage_error(tmp_path):
    """An empty directory (or one holding only a key) verifies nothing: exit 2 saying
    so, as for a missing file, never a silent exit 0."""
    keygen(tmp_path)
    empty = tmp_path / "download"
    empty.mkdir()
    (empty / "old.pub").write_text("key\n")
    r = run("verify", "--public-key", str(tmp_path / "k.pub"), str(empty))
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.strip() == f"auditshipd verify: no files to verify in {empty}"
    missing = run("verify", "--public-key", str(tmp_path / "k.pub"), str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_verify_without_a_recent_digest_reports_the_tail(tmp_path):
    """Verified long after its last digest (now), the stream's tail is reported."""
    key, _ = keygen(tmp_path)
    f = tmp_path / "out.jsonl"
    f.write_bytes(build_stream(key, 5).jsonl())
    out = run("verify", "--public-key", str(tmp_path / "k.pub"), str(f))
    assert out.returncode == 1 and "tail: newest digest is from" in out.stdout


def _reference_verifier() -> str:
    doc = (ROOT / "docs" / "integrity.md").read_text()
    section = doc.split("## A reference verifier", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.splitlines()) <= 32, "the reference verifier is meant to stay short"
    return code


def test_reference_verifier_from_the_doc(tmp_path):
    """The doc's reference verifier accepts an intact stream with duplicates and rejects a
    modified event, a deleted event and a digest signed by another key."""
    script = tmp_path / "ref.py"
    script.write_text(_reference_verifier())
    key, _ = keygen(tmp_path)
    other, _ = keygen(tmp_path, "other")
    built = build_stream(key, 25)
    pub = key.public.base64()

    def ref(lines: list[bytes]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), pub],
                              input=b"".join(x + b"\n" for x in lines).decode(),
                              capture_output=True, text=True, timeout=60)

    ok = ref(built.lines[:6] + built.lines[2:])
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 25 events"), ok.stdout + ok.stderr
    i = built.event_indexes()[3]
    record = json.loads(built.lines[i])
    record["actor"]["email"] = "mallory@example.com"
    modified = ref(built.lines[:i] + [msgspec.json.encode(record)] + built.lines[i + 1:])
    assert modified.returncode == 1 and "modified: seq 4" in modified.stdout
    deleted = ref(built.lines[:i] + built.lines[i + 1:])
    assert deleted.returncode == 1 and "gap: seq 4\n" in deleted.stdout
    j = built.event_indexes()[6]
    three = ref(built.lines[:i] + built.lines[j:])
    assert three.returncode == 1 and "gap: seq 4-6\n" in three.stdout
    far = built.lines[i].replace(b'"seq":4,', b'"seq":%d,' % (1 << 60), 1)
    ahead = ref([*built.lines, far])  # one gap of 2^60 events, reported at once
    assert ahead.returncode == 1 and f"gap: seq 26-{(1 << 60) - 1}" in ahead.stdout
    for seq in (b"%d" % ((1 << 62) + 1), b"9" * 5000):
        forged = built.lines[i].replace(b'"seq":4,', b'"seq":' + seq + b",", 1)
        absurd = ref([*built.lines, forged])
        n = len(built.lines) + 1
        assert absurd.returncode == 1 and f"line {n}: inserted: seq beyond 2^62" in absurd.stdout
    d = next(j for j in range(len(built.lines)) if built.is_digest(j))
    record = json.loads(built.lines[d])
    from auditshipd.integrity.digest import signed_payload
    record["digest"]["signature"] = other.sign(signed_payload(record["digest"]))
    forged = ref(built.lines[:d] + [msgspec.json.encode(record)] + built.lines[d + 1:])
    assert forged.returncode == 1 and "bad-signature" in forged.stdout
    assert base64.b64decode(pub)  # the key handed over is the base64 keygen prints
