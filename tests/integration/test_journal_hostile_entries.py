"""The daemon against a journal directory holding things that are not journal segments.

A symbolic link to a file outside (event-shaped lines and a line that is not), a FIFO,
a socket and a directory, all matched by the journal glob: none is read, none blocks
the reader, nothing of theirs reaches the sink or the quarantine file, and the operator
is told once per entry. (A file of another owner: tests/unit/test_tail.py.)
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from auditshipd.testing import read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration

SECRET_LINE = b"root:$6$c2VjcmV0$hash:19000:0:99999:7:::"


def file_sink(path: Path) -> str:
    return f"""
[[sinks]]
name = "local-file"
type = "file"
path = "{path}"
"""


def all_bytes_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_links_fifos_sockets_and_directories_in_the_journal_dir_are_not_read(ws):
    """Nothing from a link (-> outside file), FIFO, socket or directory is shipped or quarantined."""
    outside = ws.root / "outside" / "shadow"
    outside.parent.mkdir()
    secret_ids = write_events(outside, "secret", 3)
    with open(outside, "ab") as f:
        f.write(SECRET_LINE + b"\n")
    jdir = ws.journal.parent
    link = jdir / "audit.jsonl.x"
    link.symlink_to(outside)
    fifo = jdir / "audit.jsonl.fifo"
    os.mkfifo(fifo)
    directory = jdir / "audit.jsonl.d"
    directory.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock_path = jdir / "audit.jsonl.sock"
    sock.bind(str(sock_path))
    good = write_events(ws.journal, "g", 3)
    ws.write_config(file_sink(ws.out))
    try:
        with ws.daemon() as d:
            d.wait_started()
            wait_for(lambda: len(read_jsonl_ids(ws.out)) >= 3, 30, message="first events")
            # Events written later are still read (the reader is not blocked) and the
            # refused entries have been seen by many more scans: still one warning each.
            good += write_events(ws.journal, "h", 3)
            wait_for(lambda: len(read_jsonl_ids(ws.out)) >= 6, 30, message="later events")
            assert d.terminate() == 0
            log = d.log()
    finally:
        sock.close()
    shipped = read_jsonl_ids(ws.out)
    assert sorted(shipped) == sorted(good)
    assert not set(secret_ids) & set(shipped)
    quarantine = ws.state / "quarantine" / "local-file.jsonl"
    assert not quarantine.exists() or quarantine.read_bytes() == b""
    everything = all_bytes_under(ws.state) + ws.out.read_bytes()
    assert b"secret-" not in everything and b"root:$6$" not in everything
    for path, what in ((link, b"symbolic link"), (fifo, b"FIFO"), (sock_path, b"socket"),
                       (directory, b"directory")):
        warned = [x for x in log.splitlines() if f"not reading {path}:".encode() in x]
        assert len(warned) == 1 and what in warned[0], (path, warned)


def test_follow_symlinks_true_ships_a_linked_segment(ws):
    """[journal] follow_symlinks = true: a link to a segment elsewhere is read and shipped."""
    elsewhere = ws.root / "elsewhere" / "audit.jsonl.1"
    elsewhere.parent.mkdir()
    linked = write_events(elsewhere, "l", 3)
    (ws.journal.parent / "audit.jsonl.1").symlink_to(elsewhere)
    good = write_events(ws.journal, "g", 3)
    ws.write_config(file_sink(ws.out), journal_extra="follow_symlinks = true")
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(read_jsonl_ids(ws.out)) >= 6, 30, message="all events")
        assert d.terminate() == 0
    assert sorted(read_jsonl_ids(ws.out)) == sorted(linked + good)


def test_a_rotated_segments_torn_last_line_is_quarantined_with_its_reason(ws):
    """A writer stopped mid-line, then numbered rotation moved the file to audit.jsonl.1
    (still in the glob) and the writer went on in a new audit.jsonl: every event is
    shipped and the fragment is in the quarantine file as a torn last line, with its
    segment and offset, so the sink is not left with bytes pending for good."""
    rotated = ws.journal.parent / "audit.jsonl.1"
    first = write_events(ws.journal, "a", 2)
    offset = ws.journal.stat().st_size
    with open(ws.journal, "ab") as f:
        f.write(b'{"id": "torn-1", "action": "user.invi')
    os.rename(ws.journal, rotated)
    then = rotated.stat().st_mtime - 2 * 3600  # the fragment has sat there for two hours
    os.utime(rotated, (then, then))
    later = write_events(ws.journal, "b", 2)
    ws.write_config(file_sink(ws.out))
    quarantine = ws.state / "quarantine" / "local-file.jsonl"
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: quarantine.exists() and quarantine.read_bytes(), 30,
                 message="the torn line quarantined")
        wait_for(lambda: len(read_jsonl_ids(ws.out)) >= 4, 30, message="every event")
        assert d.terminate() == 0
    assert sorted(read_jsonl_ids(ws.out)) == sorted(first + later)
    records = [json.loads(x) for x in quarantine.read_bytes().splitlines()]
    assert [(r["path"], r["offset"], r["reason"], r["line"]) for r in records] == [
        (str(rotated), offset, "a torn last line: it never got its newline and the writer moved on",
         '{"id": "torn-1", "action": "user.invi')]
