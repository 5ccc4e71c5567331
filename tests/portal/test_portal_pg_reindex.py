"""Rebuilding the keyword vectors of the events a PostgreSQL store holds
(``auditshipd portal reindex``): events stored with an older version's
vectors are found as the present rules find them."""

from __future__ import annotations

import asyncio
import json
import sys
import unicodedata
from pathlib import Path

import asyncpg
from portal_data import Oracle, make_events

from auditshipd.portal import pg_reindex
from auditshipd.portal.backend import event_store
from auditshipd.portal.query import EventFilter

_NOTES = {
    "nfd": unicodedata.normalize("NFD", "École Française"), "turkish": "İstanbul office",
    "long": "x" * 300 + " tail", "escaped": "café", "plain": "quarterly report",
    "access": "Département",
}


async def test_reindex_rewrites_the_vectors_that_differ(pg_url: str, tmp_path: Path) -> None:
    """Events whose vectors an older version built (here: "e" and "cole" for a decomposed
    "école", "i" and "stanbul" for "İstanbul", 255 letters of a longer word) get the
    vectors the writer builds now; ASCII events of short words are not even read; a second
    run rewrites nothing; the CLI finds the database in the config."""
    events = [{**e, "id": name, "metadata": {"note": note}}
              for e, (name, note) in zip(make_events(len(_NOTES)), _NOTES.items(), strict=True)]
    events[-1]["action"] = "audit_log.viewed"  # an access record keeps an empty vector
    store = event_store(pg_url)
    await store.open()
    try:
        # "escaped": the line writes é as \u00e9, all ASCII
        await store.insert_lines([json.dumps(e, ensure_ascii=e["id"] == "escaped").encode()
                                  for e in events])
        conn = await asyncpg.connect(pg_url)
        try:
            fresh = dict(await conn.fetch("SELECT id, search::text FROM events"))
            old = {"nfd": "'cole' 'e' 'francaise'", "turkish": "'i' 'office' 'stanbul'",
                   "long": f"'{'x' * 255}' 'tail'", "escaped": "'caf'", "plain": "'old'"}
            for name, vector in old.items():
                await conn.execute("UPDATE events SET search = $2::tsvector WHERE id = $1",
                                   name, vector)
            assert await store.count(EventFilter(q="istanbul")) == 0
            assert await pg_reindex.reindex(conn, page=2) == (5, 4)
            assert await pg_reindex.reindex(conn) == (5, 0)
            now = dict(await conn.fetch("SELECT id, search::text FROM events"))
            bodies = dict(await conn.fetch("SELECT id, body FROM events"))
        finally:
            await conn.close()
        assert now == {**fresh, "plain": "'old'"}  # an ASCII line of short words: not read
        assert now["access"] == ""
        assert "\\u00e9" in bodies["escaped"] and bodies["escaped"].isascii()
        oracle = Oracle(events[:-1])
        for q in ["école", "ecole", "İstanbul", "x" * 300, "café"]:
            assert sorted(e["id"] for e in (await store.query(EventFilter(q=q))).events) == \
                sorted(oracle(q=q)), q
    finally:
        await store.close()
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\npath = "{tmp_path}/audit.jsonl"\nstate_dir = "{tmp_path}"\n'
                      f'[portal]\nenabled = false\ndatabase = "{pg_url}"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "auditshipd.cli", "portal", "reindex", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert out.decode().endswith(": 5 events read, 0 keyword vectors rewritten\n")
    assert "search_path" not in out.decode()  # the location only, never the URL
