"""Each sink's delivery state, for the streams page and ``/api/streams``.

Rows come from :func:`auditshipd.service.status.sink_status` (the state dir and the journal files,
so the portal answers the same whether it runs inside the daemon or alone). The state is
one of ``active``, ``error`` (with ``last_error``), ``inactive`` or ``blocked``; an
``active`` sink may still show its last error, with ``last_error_resolved_at`` (when it
delivered again);
``last_synced_at`` is the last acknowledged delivery. Error messages have credentials
removed before they leave the process.

An organization's admin sees only the sinks scoped to exactly that organization
(``organizations = ["acme"]``, which includes every sink of ``streams/acme.toml``); a sink
shared by several organizations, or an unscoped one, is an operator's business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from ..scrub import scrub_secrets, sink_secrets
from ..service.status import sink_status
from .stream_store import status_fresh_for

__all__ = ["STREAM_FIELDS", "STREAM_STATES", "scrub_secrets", "stream_states", "visible_to"]

log = logging.getLogger("auditshipd.portal")
# Journal bytes read per file and sink to count pending lines on a page view; estimated
# beyond (the row says so in lag_events_exact).
LAG_COUNT_BUDGET = 4 * 1024 * 1024
STREAM_STATES = ("active", "error", "inactive", "blocked")
STREAM_FIELDS = (
    "name", "type", "state", "last_synced_at", "last_error", "last_error_at",
    "last_error_resolved_at", "lag_bytes",
    "lag_events", "lag_events_exact", "last_success_at", "dead_letter_count",
    "quarantine_count",
)

def _state(value: Any) -> str:
    text = str(value or "")
    if text in STREAM_STATES:
        return text
    # Anything unexpected (an older status module, "stopped", "starting"): not delivering.
    return "active" if text in ("running", "starting") else "inactive"


def visible_to(organizations: list[str] | None, scope: str | None) -> bool:
    """Whether a sink scoped to ``organizations`` is visible to a principal of ``scope``
    (None: an operator, who sees every sink)."""
    return scope is None or organizations == [scope]


def _from_config(config: Any) -> list[dict[str, Any]]:
    return [
        {"name": sink.name, "type": sink.type, "state": "inactive"}
        for sink in getattr(config, "sinks", []) or []
    ]


async def stream_states(config: Any, scope: str | None) -> list[dict[str, Any]]:
    """The streams visible to a principal: all of them, or, for an organization scope,
    only the sinks dedicated to that organization."""
    # Self-service streams the daemon added to its config are listed from the store.
    sinks = {s.name: s for s in getattr(config, "sinks", []) or [] if s.source != "portal"}
    # Decide visibility from the config before reading anything about a sink.
    names = [n for n, s in sinks.items() if visible_to(s.organizations, scope)]
    if not names:
        return []
    rows: list[Mapping[str, Any]]
    try:
        view = dataclasses.replace(config, sinks=[sinks[n] for n in names])
        rows = await asyncio.to_thread(sink_status, view, budget=LAG_COUNT_BUDGET)
    except Exception as exc:  # status is best effort: list the sinks with what is known
        log.warning("sink status unavailable: %s: %s", type(exc).__name__, exc)
        rows = _from_config(config)
    by_name = {str(r.get("name")): r for r in rows}
    out = []
    for name in names:
        row = by_name.get(name) or {"name": name, "type": sinks[name].type, "state": "inactive"}
        item: dict[str, Any] = {k: row.get(k) for k in STREAM_FIELDS}
        item["name"] = name
        item["state"] = _state(row.get("state"))
        item["last_synced_at"] = row.get("last_synced_at") or row.get("last_success_at")
        item["last_error"] = scrub_secrets(row.get("last_error"), sink_secrets(sinks[name]))
        item["organizations"] = sinks[name].organizations
        item["stream_organization"] = getattr(sinks[name], "stream_org", None)
        out.append(item)
    return out


# -- self-service streams (defined in the portal's store) ------------------------------

def _aggregate(statuses: list[Any], fresh_after: float) -> dict[str, Any]:
    """One stream's state over the hosts whose daemons run it, the worst one: ``blocked``
    on any host (it does not advance), else an error on any host, with that host's
    error; lag is summed; last_synced_at is the latest."""
    live = [s for s in statuses if s.reported_at >= fresh_after]
    # the blocked hosts first: their error is the one shown
    errors = sorted((s for s in live if s.state in ("error", "blocked")),
                    key=lambda s: s.state != "blocked")
    synced = [s.last_synced_at for s in statuses if s.last_synced_at]
    lags = [s.lag_events for s in live if s.lag_events is not None]
    lag_bytes = [s.lag_bytes for s in live if s.lag_bytes is not None]
    state = errors[0].state if errors else ("active" if any(s.state == "active" for s in live)
                                            else "inactive")
    return {
        "state": state,
        "last_synced_at": max(synced) if synced else None,
        "last_error": next((s.last_error for s in errors if s.last_error), None),
        "lag_events": sum(lags) if lags else None,
        "lag_bytes": sum(lag_bytes) if lag_bytes else None,
        "hosts": [{"host": s.host, "state": s.state if s in live else "inactive",
                   "last_synced_at": s.last_synced_at, "last_error": s.last_error,
                   "lag_events": s.lag_events} for s in statuses],
    }


async def self_service_rows(admin: Any, scope: str | None, config: Any,
                            now: float) -> list[dict[str, Any]]:
    """The self-service streams visible to ``scope``, each with its definition (never a
    secret) and its state as the daemons report it (``paused`` when paused; ``error``
    when a stream file of the operator defines a sink of the same name)."""
    from .stream_defs import public_view

    defs = await admin.visible_scope(scope)
    statuses = await admin.store.statuses([d.id for d in defs])
    by_id: dict[str, list[Any]] = {}
    for s in statuses:
        by_id.setdefault(s.stream_id, []).append(s)
    fresh_after = now - status_fresh_for(admin.portal.stream_poll_interval)
    taken = {s.name for s in getattr(config, "sinks", []) or [] if s.source != "portal"}
    rows = []
    for d in defs:
        row = public_view(d) | _aggregate(by_id.get(d.id, []), fresh_after)
        if scope is not None:  # host names describe the operator's infrastructure
            for i, host in enumerate(row["hosts"], 1):
                host["host"] = f"host {i}"
        row["source"] = "portal"
        if d.paused:
            row["state"] = "paused"
        if d.sink_name in taken:
            row["state"] = "error"
            row["last_error"] = (f"the operator's configuration defines a sink named"
                                 f" {d.sink_name!r} too: this stream does not run until one of"
                                 " them is renamed")
        rows.append(row)
    return rows
