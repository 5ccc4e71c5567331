"""`verify` on sequences with holes and on forged seqs: gaps are named between the seqs
seen (however far apart), and a seq no sealer reaches (beyond 2^62, or thousands of
digits) is a forged line named with its file and line, reported at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.integrity_stream import build_stream

from auditshipd.integrity.chain import MAX_SEQ
from auditshipd.integrity.keys import generate_key
from auditshipd.integrity.verify import StreamVerifier
from auditshipd.timestamps import epoch_rfc3339

EXE = str(Path(sys.executable).parent / "auditshipd")


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "k"
    return generate_key(path), f"{path}.pub"


@pytest.fixture(scope="module")
def key(key_file):
    return key_file[0]


def verify(lines: list[bytes], key, at: float):
    v = StreamVerifier([key.public], now=at)
    for i, line in enumerate(lines, 1):
        v.add(line, f"x:{i}")
    return v.finish()


def seq_of(line: bytes) -> int:
    return int(line.split(b'"seq":', 1)[1].split(b",", 1)[0])


def forge(line: bytes, seq: bytes) -> bytes:
    return line.replace(b'"seq":%d,' % seq_of(line), b'"seq":' + seq + b",", 1)


def test_gaps_are_named_between_neighbouring_seqs(key):
    """Events 3, 7-9 and the digested tail 19-20 deleted: three gaps, each with its span
    and where the next event was read (the end of input for the tail)."""
    built = build_stream(key, 20, digest_events=20)
    drop = {3, 7, 8, 9, 19, 20}
    lines = [x for x in built.lines if not x.startswith(b'{"integrity"') or seq_of(x) not in drop]
    report = verify(lines, key, built.verify_at)
    gaps = [(p.seq, p.message, p.where) for p in report.problems if p.kind == "gap"]
    where = {seq_of(x): f"x:{i}" for i, x in enumerate(lines, 1) if x.startswith(b'{"integ')}
    assert gaps == [(3, "missing events: seq 3 (1 event(s))", where[4]),
                    (7, "missing events: seq 7-9 (3 event(s))", where[10]),
                    (19, "missing events: seq 19-20 (2 event(s))", "end of input")]
    assert {p.kind for p in report.problems} == {"gap"}


@pytest.mark.parametrize("seq", [b"%d" % (MAX_SEQ + 1), b"9" * 19, b"9" * 5000])
def test_a_seq_beyond_any_stream_is_a_forged_line(key, seq):
    """A copy of an event with an absurd seq appended: one problem, "inserted", at its
    line; the rest of the stream verifies as before (no gap up to that seq)."""
    built = build_stream(key, 6, digest_events=3)
    lines = [*built.lines, forge(built.lines[0], seq)]
    report = verify(lines, key, built.verify_at)
    assert [(p.kind, p.where) for p in report.problems] == [("inserted", f"x:{len(lines)}")]
    assert "beyond the largest a stream reaches" in report.problems[0].message
    assert report.last_seq == 6 and report.events == 6


def test_a_large_seq_within_range_is_a_gap_reported_at_once(key):
    """A seq below 2^62 but far beyond the stream: one gap of that many events (not a walk
    over each of them) and the line's content does not match its hash."""
    built = build_stream(key, 6, digest_events=3)
    lines = [*built.lines, forge(built.lines[0], b"%d" % MAX_SEQ)]
    report = verify(lines, key, built.verify_at)
    kinds = sorted((p.kind, p.seq) for p in report.problems)
    assert ("gap", 7) in kinds and ("modified", MAX_SEQ) in kinds
    (gap,) = [p for p in report.problems if p.kind == "gap"]
    assert gap.message == f"missing events: seq 7-{MAX_SEQ - 1} ({MAX_SEQ - 7} event(s))"


def test_verify_command_names_a_forged_seq_with_file_and_line(tmp_path, key_file):
    """`auditshipd verify` on a file with a forged huge seq exits 1 naming FILE:LINE (it
    used to walk every seq up to the forged one)."""
    key, public = key_file
    built = build_stream(key, 4, digest_events=2)
    forged = forge(built.lines[0], b"99999999999999999999")
    path = tmp_path / "siem.jsonl"
    path.write_bytes(b"".join(x + b"\n" for x in [*built.lines, forged]))
    now = epoch_rfc3339(built.verify_at)
    out = subprocess.run([EXE, "verify", "--public-key", public, "--now", now, str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{path}:{len(built.lines) + 1}: inserted: a seq of more than 19 digits" in out.stdout
