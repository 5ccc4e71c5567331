"""Encoding exported events: JSON Lines (the events as stored) or CSV.

CSV has flat columns for spreadsheets plus ``event``, the full JSON, so an export
round-trips. Flat cells that a spreadsheet would run as a formula are prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["CSV_COLUMNS", "csv_header", "csv_rows", "jsonl_rows"]

CSV_COLUMNS = (
    "id", "occurred_at", "action", "organization", "actor_type", "actor_email", "actor_name",
    "targets", "location", "metadata", "event",
)
_encode = msgspec.json.Encoder().encode
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, Mapping) else None


def _row(event: Mapping[str, Any]) -> list[str]:
    actor = event.get("actor")
    targets = event.get("targets") if isinstance(event.get("targets"), list) else []
    metadata = event.get("metadata")
    return [
        _cell(event.get("id")),
        _cell(event.get("occurred_at")),
        _cell(event.get("action")),
        _cell(_get(event.get("organization"), "slug")),
        _cell(_get(actor, "type")),
        _cell(_get(actor, "email")),
        _cell(_get(actor, "name")),
        _cell("; ".join(str(_get(t, "email") or _get(t, "name") or "") for t in targets)),
        _cell(_get(event.get("context"), "location")),
        _encode(metadata).decode() if metadata is not None else "",
        _encode(event).decode(),
    ]


def csv_header() -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(CSV_COLUMNS)
    return buf.getvalue().encode()


def csv_rows(events: Sequence[Mapping[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    for event in events:
        writer.writerow(_row(event))
    return buf.getvalue().encode()


def jsonl_rows(events: Sequence[Mapping[str, Any]]) -> bytes:
    return b"".join(_encode(e) + b"\n" for e in events)
