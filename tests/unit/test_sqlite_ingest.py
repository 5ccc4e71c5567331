"""How the SQLite store numbers a batch's rows: a batch with one event per microsecond and
none of them stored keeps each row's seq base as its seq (written in seq order whatever
the batch order); events sharing a microsecond, or meeting stored ones there, are numbered
one after the other. Every index row carries its event's seq."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from pathlib import Path

import msgspec

from auditshipd.portal.query import seq_base
from auditshipd.portal.sqlite_ingest import insert_rows, prepare_rows
from auditshipd.portal.sqlite_schema import prepare

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def _line(event_id: str, when: dt.datetime, word: str = "invoice") -> bytes:
    return msgspec.json.encode({
        "id": event_id, "action": "user.invited",
        "occurred_at": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": {"email": f"{event_id}@x.test"}, "metadata": {"note": word},
    })


def _store(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "p.sqlite3", isolation_level=None)
    prepare(conn)
    return conn


def _write(conn: sqlite3.Connection, lines: list[bytes]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    n = insert_rows(conn, prepare_rows(lines))
    conn.execute("COMMIT")
    return n


def _stored(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    rows = conn.execute("SELECT seq, id FROM events ORDER BY seq").fetchall()
    # the key and keyword index rows carry the same seqs
    assert [r[0] for r in conn.execute("SELECT rowid FROM events_keys ORDER BY rowid")] == [
        seq for seq, _ in rows]
    assert [r[0] for r in conn.execute(
        "SELECT rowid FROM events_fts WHERE events_fts MATCH 'invoice' ORDER BY rowid")] == [
        seq for seq, _ in rows]
    return rows


def test_one_event_per_microsecond_keeps_its_base_in_any_batch_order(tmp_path: Path) -> None:
    conn = _store(tmp_path)
    times = [T0 + dt.timedelta(microseconds=7 * i) for i in range(300)]
    lines = [_line(f"e{i}", t) for i, t in enumerate(times)]
    random.Random(3).shuffle(lines)
    assert _write(conn, lines[:200]) == 200
    assert _write(conn, lines[200:]) == 100  # between stored ones, not at their microseconds
    assert _stored(conn) == [(seq_base(t), f"e{i}") for i, t in enumerate(times)]
    assert _write(conn, lines) == 0  # every one stored already


def test_a_shared_microsecond_is_numbered_after_what_is_stored_there(tmp_path: Path) -> None:
    conn = _store(tmp_path)
    base = seq_base(T0)
    assert _write(conn, [_line("a", T0), _line("b", T0), _line("c", T0 + dt.timedelta(seconds=1))]) == 3
    assert _write(conn, [_line("b", T0), _line("d", T0), _line("a", T0)]) == 1
    assert _stored(conn) == [(base, "a"), (base + 1, "b"), (base + 2, "d"),
                             (seq_base(T0 + dt.timedelta(seconds=1)), "c")]


def test_an_id_given_twice_in_a_batch_is_written_once(tmp_path: Path) -> None:
    conn = _store(tmp_path)
    later = T0 + dt.timedelta(seconds=5)
    assert _write(conn, [_line("a", T0), _line("b", later), _line("a", T0, "report")]) == 2
    assert _stored(conn) == [(seq_base(T0), "a"), (seq_base(later), "b")]
    assert conn.execute("SELECT count(*) FROM events_fts WHERE events_fts MATCH 'report'"
                        ).fetchone() == (0,)
