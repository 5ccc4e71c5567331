"""Each sink's delivery state, for the streams page and ``/api/streams``.

The daemon's ``auditshipd.status.sink_status(config)`` gives lag, last success, last
error and dead-letter counts; without it the sinks of the configuration are listed with
what is known.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

__all__ = ["STREAM_FIELDS", "stream_states"]

log = logging.getLogger("auditshipd.portal")
STREAM_FIELDS = (
    "name", "type", "state", "lag_bytes", "lag_events", "last_success_at", "last_error",
    "dead_letter_count", "quarantine_count",
)


def _from_config(config: Any) -> list[dict[str, Any]]:
    out = []
    for sink in getattr(config, "sinks", []) or []:
        row: dict[str, Any] = dict.fromkeys(STREAM_FIELDS)
        row.update(
            name=sink.name, type=sink.type, state="enabled" if sink.enabled else "disabled",
            organizations=sink.organizations,
        )
        out.append(row)
    return out


async def stream_states(config: Any, scope: str | None) -> list[dict[str, Any]]:
    """The streams visible to a principal: all of them, or, for an organization scope,
    only the sinks dedicated to that organization."""
    rows: list[dict[str, Any]]
    try:
        from ..status import sink_status  # type: ignore[import-not-found]
    except ImportError:
        rows = _from_config(config)
    else:
        try:
            result = await asyncio.to_thread(sink_status, config)
            if inspect.isawaitable(result):
                result = await result
            rows = [dict(r) for r in result]
        except Exception as exc:  # the status module is best effort here
            log.warning("sink status unavailable: %s: %s", type(exc).__name__, exc)
            rows = _from_config(config)
    organizations = {s.name: s.organizations for s in getattr(config, "sinks", []) or []}
    visible = []
    for row in rows:
        orgs = row.get("organizations", organizations.get(row.get("name")))
        if scope is not None and orgs != [scope]:
            continue
        out = {k: row.get(k) for k in STREAM_FIELDS}
        out["organizations"] = orgs
        visible.append(out)
    return visible
