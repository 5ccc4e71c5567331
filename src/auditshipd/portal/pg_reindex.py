"""Rebuild the keyword vectors of the events a PostgreSQL portal store holds.

A store's ``search`` column is built by the writer when an event is stored. When a new
version of auditshipd cuts or folds words differently, the events stored before keep the
vectors of the old rules until they are rebuilt here (run it once, after every host and
replica runs the new version):

    auditshipd portal reindex [-c FILE]

It reads only the events whose vector can differ from what the present rules build (a
character outside ASCII or a ``\\u`` escape in the line, a run of 256 or more letters and
digits), a page at a time in time order, and rewrites each vector that differs, one
transaction a page: writers and replicas go on meanwhile. Running it again rewrites
nothing.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from .event_rows import event_row
from .pg_vectors import row_vectors

__all__ = ["reindex"]

# The lines whose vector the rules of this version may build differently from an older
# one's: those for ASCII words of up to 255 letters have not changed. (PostgreSQL's
# regular expressions repeat an atom at most 255 times.)
_CANDIDATES = (
    "(body ~ '[^[:ascii:]]' OR strpos(body, '\\u') > 0"
    " OR body ~ '[[:alnum:]]{255}[[:alnum:]]')"
)
_PAGE = f"""
SELECT id, occurred_at, ingest, body, search FROM events
WHERE (occurred_at, ingest) > ($1, $2) AND {_CANDIDATES}
ORDER BY occurred_at, ingest LIMIT $3"""
_UPDATE = "UPDATE events SET search = $3 WHERE id = $1 AND occurred_at = $2"
_START = (_dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc), 0)


async def reindex(conn: Any, page: int = 1000) -> tuple[int, int]:
    """Rebuild the vectors of the store on ``conn`` (an asyncpg connection whose
    ``search_path`` finds the portal schema); ``(events read, vectors rewritten)``."""
    await conn.set_type_codec(
        "tsvector", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary"
    )
    after, read, rewritten = _START, 0, 0
    while True:
        rows = await conn.fetch(_PAGE, after[0], after[1], page)
        if not rows:
            return read, rewritten
        read += len(rows)
        events = [event_row(r["body"].encode(), text=False) for r in rows]
        changed = [(r["id"], r["occurred_at"], vector)
                   for r, vector in zip(rows, row_vectors(events), strict=True)
                   if vector != r["search"]]
        if changed:
            async with conn.transaction():
                await conn.executemany(_UPDATE, changed)
            rewritten += len(changed)
        after = (rows[-1]["occurred_at"], rows[-1]["ingest"])
