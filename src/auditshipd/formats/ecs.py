"""Elastic Common Schema (8.x) documents.

``event.category`` and ``event.type`` follow the OCSF action table, so one table (and
the operator's overrides of it) decides what kind of event an action is in every
format: IAM classes -> ``iam``, Authentication -> ``authentication``, Entity
Management, Web Resources and API Activity -> ``configuration``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from ..timestamps import format_rfc3339, parse_rfc3339
from .base import Encoder
from .event import epoch_ms, failed, ip_or_none, party, target_user, text
from .ocsf_actions import ActionTable, OcsfAction

__all__ = ["ECS_VERSION", "EPOCH", "OcsfAction", "EcsEncoder", "ecs_kind", "ecs_timestamp",
           "strict_rfc3339"]

ECS_VERSION = "8.17.0"
# ``@timestamp`` (a required date) of an event whose ``occurred_at`` cannot be read: the
# epoch, never the encoding time, so encoding the event again writes the same bytes.
EPOCH = "1970-01-01T00:00:00.000Z"
# RFC 3339 (or a date alone) as Elasticsearch's default date format
# (strict_date_optional_time) reads it. A readable time in any other form (a space for
# the T, a lowercase z, no offset, no seconds, a leap second: java.time's second of
# minute ends at 59) is written as its instant in UTC, the original kept in
# auditshipd.occurred_at.
strict_rfc3339 = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:[0-5]\d(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2}))?",
                     re.ASCII).fullmatch
_encode = msgspec.json.Encoder().encode


def ecs_timestamp(at: Any) -> str | None:
    """``@timestamp`` of an ``occurred_at``: the text itself when it is strict RFC 3339,
    the instant in UTC (milliseconds) when it is readable in another form, None when it
    cannot be read."""
    if epoch_ms(at) is None:
        return None
    if strict_rfc3339(at):
        return at
    when = parse_rfc3339(at)
    return None if when is None else format_rfc3339(when)


def ecs_kind(row: OcsfAction) -> tuple[str, list[str]]:
    """(event.category, event.type) of an action's OCSF class and activity."""
    uid, aid = row.class_uid, row.activity_id
    if uid == 3001:
        return "iam", ["user", {1: "creation", 6: "deletion"}.get(aid, "change")]
    if uid == 3002:
        return "authentication", [{1: "start", 2: "end"}.get(aid, "info")]
    if uid == 3005:
        return "iam", ["user", "change"]
    if uid == 3006:
        return "iam", ["group", {6: "creation", 5: "deletion"}.get(aid, "change")]
    if uid == 3003:
        return "iam", ["info"]
    return "configuration", [{1: "creation", 2: "access", 4: "deletion", 7: "access"}
                             .get(aid, "change" if aid in (3, 8, 9, 10, 11, 12, 13) else "info")]


class EcsEncoder(Encoder):
    name = "ecs"

    def __init__(self, actions: Mapping[str, OcsfAction] | None = None, **_: Any):
        self.table = ActionTable(actions)
        self._kinds: dict[OcsfAction, tuple[str, list[str]]] = {}

    def encode(self, event: dict[str, Any]) -> bytes:
        return _encode(self.build(event))

    def build(self, e: dict[str, Any]) -> dict[str, Any]:
        action = text(e.get("action")) or "unknown"
        row = self.table[action]
        kind = self._kinds.get(row)
        if kind is None:
            kind = self._kinds[row] = ecs_kind(row)
        ev: dict[str, Any] = {
            "kind": "event", "action": action, "category": [kind[0]], "type": kind[1],
            "outcome": "failure" if failed(action) else "success",
            "dataset": "auditshipd.audit", "module": "auditshipd",
        }
        if "id" in e:
            ev["id"] = str(e["id"])
        at = e.get("occurred_at")
        stamp = ecs_timestamp(at)
        out: dict[str, Any] = {"@timestamp": stamp or EPOCH,
                               "ecs": {"version": ECS_VERSION}, "event": ev}
        actor = party(e.get("actor"))
        user: dict[str, Any] = {}
        if actor is not None:
            if actor.email:
                user["email"] = actor.email
            if actor.name or actor.email:
                user["name"] = actor.name or actor.email
        target = target_user(e.get("targets"))
        if target is not None:
            t = {k: v for k, v in (("email", target.email), ("name", target.name or target.email))
                 if v}
            if t:
                user["target"] = t
        if user:
            out["user"] = user
        ctx = e.get("context")
        if isinstance(ctx, dict):
            ip = ip_or_none(ctx.get("location"))
            if ip is not None:
                out["source"] = {"ip": ip}
            ua = text(ctx.get("user_agent"))
            if ua is not None:
                out["user_agent"] = {"original": ua}
        org = e.get("organization")
        if isinstance(org, dict):
            o = {k: v for k, v in (("id", text(org.get("slug"))), ("name", text(org.get("name"))))
                 if v}
            if o:
                out["organization"] = o
        extra: dict[str, Any] = {}
        if stamp is None or stamp != at:
            extra["occurred_at"] = at
        if actor is not None and actor.type:
            extra["actor_type"] = actor.type
        targets = e.get("targets")
        if targets:
            extra["targets"] = targets
        if e.get("metadata"):
            extra["metadata"] = e["metadata"]
        if extra:
            out["auditshipd"] = extra
        return out
