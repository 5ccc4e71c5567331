"""OCSF written straight to bytes from the typed view, byte for byte as ocsf.py writes it.

Per action, everything up to ``"time":`` and the ``message``/``metadata`` prefix are
encoded once (``PlanCache``); per organization, person, target list and context the
pieces are encoded once (``BytesCache``, keyed by the object's bytes in the line); per
event the pieces are joined. ``OcsfEncoder.build`` stays the reference: the key order
below follows its dict insertion order, and any line the view cannot answer for goes
to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec
from msgspec import UNSET

from .event import failed, ip_or_none
from .fastpath import FastLines
from .ocsf import _HAS_USER, _NEEDS_USER, _ROLE_KEYS, _SEVERITY, OcsfEncoder
from .ocsf_actions import CLASSES, OCSF_VERSION, OcsfAction
from .plans import BytesCache, PlanCache
from .view import (
    MISS,
    PartyView,
    decode_context,
    decode_event,
    decode_organization,
    decode_party,
    decode_targets,
    epoch_ms_fast,
    first_entity,
    jstr,
    target_user,
    truthy,
)

__all__ = ["FastOcsfEncoder"]

_decode = msgspec.json.Decoder().decode
_USER_TYPES = {"user": b',"type":"User","type_id":1', "admin": b',"type":"Admin","type_id":2'}


class _Person:
    """A party and its OCSF ``user`` up to (not including) ``org`` and the closing brace."""

    __slots__ = ("party", "user")

    def __init__(self, p: PartyView):
        self.party = p
        email = p.email
        b = b'{"email_addr":' + jstr(email) + b',"name":' if email else b'{"name":'
        b += jstr(p.name or email or p.type)
        t = p.type
        if t:
            b += _USER_TYPES.get(t) or b',"type":' + jstr(t) + b',"type_id":99'
        self.user = b


def _person(raw: bytes) -> _Person | None:
    p = decode_party(raw)
    return _Person(p) if p is not None else None


def _organization(raw: bytes) -> tuple[bytes, bytes]:
    """(',"tenant_uid":slug' or b"", ',"org":{...}' or b"") of ``organization``."""
    o = decode_organization(raw)
    if o is None:
        return b"", b""
    slug, name = o.slug, o.name
    if slug:
        s = jstr(slug)
        org = b'{"uid":' + s + (b',"name":' + jstr(name) + b"}" if name else b"}")
        return b',"tenant_uid":' + s, b',"org":' + org
    return b"", (b',"org":{"name":' + jstr(name) + b"}" if name else b"")


class _Targets:
    """What OCSF reads from ``targets``: the person, the entity, the group, several?"""

    __slots__ = ("user", "entity", "group", "many")

    def __init__(self, targets: list[PartyView]):
        t = target_user(targets)
        self.user = _Person(t) if t is not None else None
        e = first_entity(targets)
        if e is None:
            self.entity: bytes | None = None  # the action's kind (per action)
        else:
            b = b'{"name":' + jstr(e.name or e.email or e.type)
            self.entity = b + b',"type":' + jstr(e.type) + b"}" if e.type else b + b"}"
        group = next((p for p in targets if p.type == "group"), None)
        self.group = (b',"group":{"name":' + jstr(group.name or group.email) + b"}"
                      if group is not None and (group.email or group.name)
                      else b',"group":{"name":"unknown"}')
        self.many = len(targets) > 1


def _targets(raw: bytes) -> _Targets | None:
    ts = decode_targets(raw)
    return _Targets(ts) if ts is not None else None


def _context(raw: bytes) -> tuple[bool, bytes, bytes] | None:
    """(has an IP, the pieces of src_endpoint / http_request, the unmapped location)."""
    c = decode_context(raw)
    if c is None:
        return None
    loc, ua = c.location, c.user_agent
    ip = ip_or_none(loc) if loc else None
    out = b',"src_endpoint":{"ip":' + jstr(ip) + b"}" if ip is not None else b""
    if ua:
        out += b',"http_request":{"user_agent":' + jstr(ua) + b"}"
    unmapped = b'"location":' + jstr(loc) if ip is None and loc else b""
    return ip is not None, out, unmapped


# Shared by every OCSF encoder (they write these pieces alike); bounded.
_PERSONS: BytesCache[_Person | None] = BytesCache(_person)
_ORGS: BytesCache[tuple[bytes, bytes]] = BytesCache(_organization, max_entries=4096)
_TARGETS: BytesCache[_Targets | None] = BytesCache(_targets)
_CONTEXTS: BytesCache[tuple[bool, bytes, bytes] | None] = BytesCache(_context)


class _Plan(NamedTuple):
    """What OCSF writes for an action (a tuple: the C tier reads it by position)."""

    uid: int
    head: bytes  # '{"class_uid":...,"status":"...","time":'
    mid: bytes  # ',"message":...,"metadata":{...,"event_code":...' (left open)
    entity: bytes  # the entity when no target is one: the action's kind
    api: bytes
    privileges: bytes  # [action]


def _privileges(metadata: Any, plan: _Plan) -> bytes:
    if len(metadata):
        m = _decode(metadata)
        if isinstance(m, dict):
            for k in _ROLE_KEYS:
                v = m.get(k)
                if isinstance(v, str) and v:
                    return b"[" + jstr(v) + b"]"
    return plan.privileges


class FastOcsfEncoder(FastLines, OcsfEncoder):
    """OcsfEncoder whose ``encode_lines`` writes bytes in C, else from the typed view."""

    c_format = 0  # _formats_c.OCSF

    def __init__(self, actions: Mapping[str, OcsfAction] | None = None, **kw: Any):
        super().__init__(actions, **kw)
        self.plans: PlanCache[_Plan] = PlanCache(self._plan, max_entries=1024,
                                                 max_bytes=1 << 20)
        name = self.product["name"]
        self._service = self.c_service = b',"service":' + jstr({"name": name})
        self._app_actor = self.c_app_actor = b',"actor":' + jstr({"app_name": name})

    def _plan(self, action: str) -> _Plan:
        row = self.table[action]
        cls = CLASSES[row.class_uid]
        activity = row.activity_name if row.activity_id == 99 and row.activity_name \
            else cls.activities.get(row.activity_id, "Other")
        ok = not failed(action)
        head = jstr({
            "class_uid": row.class_uid, "class_name": cls.name,
            "category_uid": row.category_uid, "category_name": cls.category_name,
            "activity_id": row.activity_id, "activity_name": activity,
            "type_uid": row.type_uid, "type_name": f"{cls.name}: {activity}",
            "severity_id": row.severity_id, "severity": _SEVERITY[row.severity_id],
            "status_id": 1 if ok else 2, "status": "Success" if ok else "Failure",
        })[:-1] + b',"time":'
        meta = jstr({"version": OCSF_VERSION, "product": self.product, "event_code": action})
        mid = b',"message":' + jstr(action) + b',"metadata":' + meta[:-1]
        kind = action.rsplit(".", 1)[0] if "." in action else action
        return _Plan(row.class_uid, head, mid, jstr({"name": kind, "type": kind}),
                     b',"api":' + jstr({"operation": action}), jstr([action]))

    def _fast(self, line: bytes) -> bytes | None:
        v = decode_event(line)
        action = v.action or "unknown"
        plans = self.plans.map
        ms = epoch_ms_fast(v.occurred_at)
        if ms is None:  # the reference writes time 0 and keeps the original in unmapped
            return None
        plan = plans.get(action) or self.plans.get(action)
        uid = plan.uid
        key = bytes(v.organization)
        o = _ORGS.map.get(key, MISS)
        tenant, org = o if o is not MISS else _ORGS.fill(key)  # type: ignore[misc]
        parts = [plan.head, b"%d" % ms, plan.mid, tenant]
        if v.id is not UNSET:
            parts += (b',"uid":', jstr(v.id))
        parts.append(b"}")
        unmapped: list[bytes] = []
        key = bytes(v.actor)
        a = _PERSONS.map.get(key, MISS)
        if a is MISS:
            a = _PERSONS.fill(key)
        if a is not None:
            if uid == 6001:
                unmapped.append(b'"actor":{"user":' + a.user + org + b"}}")
            else:
                parts += (b',"actor":{"user":', a.user, org, b"}}")
        traw = bytes(v.targets)
        ts = _TARGETS.map.get(traw, MISS)
        if ts is MISS:
            ts = _TARGETS.fill(traw)
        target = ts.user if ts is not None else None
        if uid == 3002:
            who = a or target
            parts.append(self._service)
        else:
            who = target or (a if uid in _NEEDS_USER else None)
        if who is not None:
            if uid in _HAS_USER:
                parts += (b',"user":', who.user, org, b"}")
            else:
                unmapped.append(b'"user":' + who.user + org + b"}")
        elif uid in _NEEDS_USER:
            parts.append(b',"user":{"name":"unknown"}')
        key = bytes(v.context)
        ctx = _CONTEXTS.map.get(key, MISS)
        if ctx is MISS:
            ctx = _CONTEXTS.fill(key)
        if uid == 3004:
            parts += (b',"entity":', ts.entity if ts is not None and ts.entity else plan.entity)
        elif uid == 3005:
            parts += (b',"privileges":', _privileges(v.metadata, plan))
        elif uid == 3006:
            parts.append(ts.group if ts is not None else b',"group":{"name":"unknown"}')
        elif uid == 6001:
            parts += (b',"web_resources":[',
                      ts.entity if ts is not None and ts.entity else plan.entity, b"]")
        elif uid == 6003:
            parts.append(plan.api)
            if a is None:
                parts.append(self._app_actor)
            if ctx is None or not ctx[0]:
                parts.append(b',"src_endpoint":{"name":"unknown"}')
        if ctx is not None:
            parts.append(ctx[1])
            if ctx[2]:
                unmapped.append(ctx[2])
        md = v.metadata
        if truthy(md):
            unmapped.append(b'"metadata":' + md)
        if ts is not None and ts.many:
            unmapped.append(b'"targets":' + traw)
        if unmapped:
            parts += (b',"unmapped":{', b",".join(unmapped), b"}}")
        else:
            parts.append(b"}")
        return b"".join(parts)
