"""The keyword vectors of a batch's rows, for the PostgreSQL store's binary ``COPY``.

Each row's ``tsvector`` (binary form) is :func:`~auditshipd.portal.pg_sql.search_vector`
of the row's keyword text (:func:`~auditshipd.portal.event_rows.indexed_text`). The C
extension ``_tsvector_c`` writes the same bytes straight from the stored line, without
building the text (one call per batch); it hands back the lines it does not answer for
(an escape, text outside ASCII, a number with a fraction or an exponent, a word over
2,030 bytes), and those, or every line when the extension is not built or is switched
off (``AUDITSHIPD_TSVECTOR_C=0``), take the Python code. The portal's own access records get
an empty vector, as they have an empty text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .event_rows import ACCESS_ACTIONS, EventRow, line_text, tsvector_c_on
from .pg_sql import search_vector

__all__ = ["EMPTY_VECTOR", "row_vectors", "tsvector_c"]

try:
    from ._tsvector_c import vectors as _built_c
except ImportError:  # built without a C compiler: search_vector() does every row
    _built_c = None

EMPTY_VECTOR = search_vector("")


def tsvector_c() -> Callable[[list[Any]], list[bytes | None]] | None:
    """The C extension's ``vectors``, or None (not built, or switched off with
    ``AUDITSHIPD_TSVECTOR_C=0``)."""
    return _built_c if tsvector_c_on() else None


def row_vectors(rows: Sequence[EventRow]) -> list[bytes]:
    """The binary ``tsvector`` of each row, in order, built from its ``body`` (its
    ``text`` is not read: :func:`~auditshipd.portal.event_rows.event_row` may leave it
    empty)."""
    c = tsvector_c()
    fast = c([r.body for r in rows]) if c is not None else [None] * len(rows)
    out: list[bytes] = []
    for row, vector in zip(rows, fast, strict=True):
        if row.action in ACCESS_ACTIONS:
            vector = EMPTY_VECTOR
        elif vector is None:
            vector = search_vector(line_text(row.body.encode()))
        out.append(vector)
    return out
