"""ECS written straight to bytes from the typed view, byte for byte as ecs.py writes it.

Per action the ``ecs`` and ``event`` objects (up to ``id``) are encoded once; per actor,
target list, context and organization the pieces are encoded once (bounded caches keyed
by the object's bytes); ``targets`` and ``metadata`` are copied as the line holds them.
``EcsEncoder.build`` stays the reference (key order included).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import UNSET

from .ecs import ECS_VERSION, EcsEncoder, ecs_kind, strict_rfc3339
from .event import failed, ip_or_none
from .fastpath import FastLines
from .ocsf_actions import OcsfAction
from .plans import BytesCache, PlanCache
from .view import (
    MISS,
    decode_context,
    decode_event,
    decode_organization,
    decode_party,
    decode_targets,
    epoch_ms_fast,
    jstr,
    target_user,
    truthy,
)

__all__ = ["FastEcsEncoder"]


def _actor(raw: bytes) -> tuple[bytes, bytes]:
    """(the actor's ``user`` members, ``"actor_type":...`` or b"")."""
    p = decode_party(raw)
    if p is None:
        return b"", b""
    members = []
    if p.email:
        members.append(b'"email":' + jstr(p.email))
    if p.name or p.email:
        members.append(b'"name":' + jstr(p.name or p.email))
    return b",".join(members), (b'"actor_type":' + jstr(p.type) if p.type else b"")


def _target(raw: bytes) -> bytes:
    """``"target":{...}`` of the person ``targets`` is about, or b""."""
    t = target_user(decode_targets(raw))
    if t is None:
        return b""
    members = []
    if t.email:
        members.append(b'"email":' + jstr(t.email))
    if t.name or t.email:
        members.append(b'"name":' + jstr(t.name or t.email))
    return b'"target":{' + b",".join(members) + b"}" if members else b""


def _context(raw: bytes) -> bytes:
    c = decode_context(raw)
    if c is None:
        return b""
    ip = ip_or_none(c.location) if c.location else None
    out = b',"source":{"ip":' + jstr(ip) + b"}" if ip is not None else b""
    if c.user_agent:
        out += b',"user_agent":{"original":' + jstr(c.user_agent) + b"}"
    return out


def _organization(raw: bytes) -> bytes:
    o = decode_organization(raw)
    if o is None:
        return b""
    members = []
    if o.slug:
        members.append(b'"id":' + jstr(o.slug))
    if o.name:
        members.append(b'"name":' + jstr(o.name))
    return b',"organization":{' + b",".join(members) + b"}" if members else b""


_ACTORS: BytesCache[tuple[bytes, bytes]] = BytesCache(_actor)
_TARGETS: BytesCache[bytes] = BytesCache(_target)
_CONTEXTS: BytesCache[bytes] = BytesCache(_context)
_ORGS: BytesCache[bytes] = BytesCache(_organization, max_entries=4096)


class FastEcsEncoder(FastLines, EcsEncoder):
    """EcsEncoder whose ``encode_lines`` writes bytes in C, else from the typed view."""

    c_format = 1  # _formats_c.ECS

    def __init__(self, actions: Mapping[str, OcsfAction] | None = None, **kw: Any):
        super().__init__(actions, **kw)
        self.plans: PlanCache[bytes] = PlanCache(self._plan, max_entries=1024,
                                                 max_bytes=1 << 20)

    def _plan(self, action: str) -> bytes:
        """``,"ecs":{...},"event":{...,"module":"auditshipd"`` (left open for ``id``)."""
        row = self.table[action]
        kind = ecs_kind(row)
        ev = {"kind": "event", "action": action, "category": [kind[0]], "type": kind[1],
              "outcome": "failure" if failed(action) else "success",
              "dataset": "auditshipd.audit", "module": "auditshipd"}
        return (b',"ecs":' + jstr({"version": ECS_VERSION}) + b',"event":' + jstr(ev)[:-1])

    def _fast(self, line: bytes) -> bytes | None:
        v = decode_event(line)
        action = v.action or "unknown"
        plans = self.plans.map
        at = v.occurred_at
        if epoch_ms_fast(at) is None or not strict_rfc3339(at):  # the epoch or the instant
            return None  # in UTC, the original kept: the reference writes it
        parts = [b'{"@timestamp":', jstr(at),
                 plans.get(action) or self.plans.get(action)]
        if v.id is not UNSET:
            parts += (b',"id":', jstr(v.id))
        parts.append(b"}")
        key = bytes(v.actor)
        actor = _ACTORS.map.get(key, MISS)
        user, actor_type = actor if actor is not MISS else _ACTORS.fill(key)  # type: ignore[misc]
        traw = bytes(v.targets)
        target = _TARGETS.map.get(traw, MISS)
        if target is MISS:
            target = _TARGETS.fill(traw)
        if user:
            parts += (b',"user":{', user, b"," + target + b"}" if target else b"}")
        elif target:
            parts += (b',"user":{', target, b"}")
        key = bytes(v.context)
        ctx = _CONTEXTS.map.get(key, MISS)
        parts.append(ctx if ctx is not MISS else _CONTEXTS.fill(key))
        key = bytes(v.organization)
        org = _ORGS.map.get(key, MISS)
        parts.append(org if org is not MISS else _ORGS.fill(key))
        extra = []
        if actor_type:
            extra.append(actor_type)
        if truthy(traw):
            extra.append(b'"targets":' + traw)
        md = v.metadata
        if truthy(md):
            extra.append(b'"metadata":' + md)
        if extra:
            parts += (b',"auditshipd":{', b",".join(extra), b"}}")
        else:
            parts.append(b"}")
        return b"".join(parts)
