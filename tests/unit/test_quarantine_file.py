"""QuarantineFile: a write is whole or absent, even on a full disk; records appended after
a torn line (a crash during an append) stay readable."""

from __future__ import annotations

import errno
import os

import msgspec
import pytest

from auditshipd.delivery.quarantine import QuarantineFile


def _records(q: QuarantineFile, *offsets: int) -> list:
    return [q.record("1:2", "/j/audit.jsonl", o, "invalid JSON", b"{not json") for o in offsets]


def test_a_write_cut_by_a_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    """ENOSPC after part of the records was written: the part is cut off again, so the
    retry (the sink holds its cursor until it succeeds) does not follow a torn record."""
    q = QuarantineFile(tmp_path, "s")
    q.write(_records(q, 0))
    before = q.path.read_bytes()
    real_write = os.write

    def short_then_full(fd: int, data) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError):
        q.write(_records(q, 10, 20))
    monkeypatch.undo()
    assert q.path.read_bytes() == before
    q.write(_records(q, 10, 20))
    assert [r.offset for r in q.read()] == [0, 10, 20]


def test_records_after_a_torn_line_start_a_line_of_their_own(tmp_path):
    q = QuarantineFile(tmp_path, "s")
    q.write(_records(q, 0))
    with open(q.path, "ab") as f:
        f.write(b'{"quarantined_at":"2026')  # a crash during an append
    q.write(_records(q, 30))
    lines = q.path.read_bytes().splitlines()
    assert len(lines) == 3 and lines[1] == b'{"quarantined_at":"2026'
    decode = msgspec.json.Decoder().decode
    assert [decode(line)["offset"] for line in (lines[0], lines[2])] == [0, 30]
    assert q.count() == 2  # the records (status's quarantine_count), not the torn line


def test_scan_names_a_torn_line_and_reads_the_records_around_it(tmp_path):
    q = QuarantineFile(tmp_path, "s")
    q.write(_records(q, 0))
    with open(q.path, "ab") as f:
        f.write(b'{"quarantined_at":"2026')
    q.write(_records(q, 30))
    scan = q.scan()
    assert [r.offset for r in scan.records] == [0, 30] and scan.unreadable == [2]
    assert [r.offset for r in q.read()] == [0, 30]


def _config_file(tmp_path) -> str:
    journal = tmp_path / "journal" / "audit.jsonl"
    path = tmp_path / "auditshipd.toml"
    path.write_text(f'[journal]\npath = "{journal}"\nstate_dir = "{tmp_path / "state"}"\n'
                    '[[sinks]]\nname = "siem"\ntype = "file"\npath = "out.jsonl"\n')
    return str(path)


def test_quarantine_list_shows_every_sinks_records(tmp_path, capsys):
    """`quarantine list`: each sink's records (a removed sink's and a stream's too, whose
    files are in the state dir), oldest first, with where and why; --sink keeps one;
    --json prints whole records, the line included; a torn line is named on stderr."""
    from auditshipd.cli import main

    config = _config_file(tmp_path)
    siem = QuarantineFile(tmp_path / "state", "siem")
    siem.write([siem.record("1:2", "/j/audit.jsonl", 7, "invalid JSON", b"{not json"),
                siem.record("1:2", "/j/audit.jsonl", 17, "not a JSON object (a JSON list)", b"[1]")])
    stream = QuarantineFile(tmp_path / "state", "acme.siem")
    stream.write([stream.record("1:3", "/j/audit.jsonl.1", 99, "invalid UTF-8", b"\xff{")])
    with open(stream.path, "ab") as f:
        f.write(b'{"quarantined_at":')

    assert main(["quarantine", "list", "-c", config]) == 0
    out, err = capsys.readouterr()
    rows = out.splitlines()
    assert rows[0].split()[:3] == ["SINK", "QUARANTINED", "AT"]
    assert [r.split()[0] for r in rows[1:]] == ["acme.siem", "siem", "siem"]
    assert "/j/audit.jsonl.1:99  invalid UTF-8" in rows[1]
    assert "/j/audit.jsonl:7  invalid JSON" in rows[2] and "/j/audit.jsonl:17" in rows[3]
    assert "{not json" not in out  # the table never prints the line itself
    assert "acme.siem.jsonl: 1 unreadable line(s) (line 2)" in err

    assert main(["quarantine", "list", "--sink", "siem", "--json", "-c", config]) == 0
    out, err = capsys.readouterr()
    records = [msgspec.json.decode(line) for line in out.splitlines()]
    assert [(r["sink"], r["offset"], r["line"]) for r in records] == [
        ("siem", 7, "{not json"), ("siem", 17, "[1]")]
    assert "unreadable" not in err

    assert main(["quarantine", "list", "--sink", "nosuch", "-c", config]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == []
