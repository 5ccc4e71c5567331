"""CEF written straight to bytes from the typed view, byte for byte as cef.py writes it.

Per action the header and the ``act``/``outcome`` pairs are written once; per actor,
target list, context and organization the extension pairs (escaped) are written once
(bounded caches keyed by the object's bytes); ``cs3`` is the line's ``metadata`` bytes.
``CefEncoder.encode`` stays the reference (pair order included).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import UNSET, Raw

from .cef import (
    _SEVERITY,
    IPV6_LABEL,
    MAX_LENGTH,
    MAX_SIGNATURE,
    CefEncoder,
    cut,
    escape_extension,
    escape_header,
)
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
    target_user,
    truthy,
)

__all__ = ["FastCefEncoder"]


def _pair(key: str, value: str) -> bytes:
    """`` key=value`` (value escaped), UTF-8, with the space that joins it to the last."""
    return f" {key}={escape_extension(cut(key, value))}".encode()


def _actor(raw: bytes) -> tuple[bytes, bytes]:
    """(`` suser=...`` or b"", `` cs4Label=actorType cs4=...`` or b"")."""
    p = decode_party(raw)
    if p is None:
        return b"", b""
    label = p.email or p.name
    return (_pair("suser", label) if label else b"",
            _pair("cs4Label", "actorType") + _pair("cs4", p.type) if p.type else b"")


def _target(raw: bytes) -> bytes:
    t = target_user(decode_targets(raw))
    label = t.email or t.name if t is not None else None
    return _pair("duser", label) if label else b""


def _context(raw: bytes) -> bytes:
    c = decode_context(raw)
    if c is None:
        return b""
    ip = ip_or_none(c.location) if c.location else None
    if ip is None:
        out = b""
    else:
        out = _pair("c6a2Label", IPV6_LABEL) + _pair("c6a2", ip) if ":" in ip else _pair("src", ip)
    return out + _pair("requestClientApplication", c.user_agent) if c.user_agent else out


def _organization(raw: bytes) -> bytes:
    o = decode_organization(raw)
    if o is None:
        return b""
    out = _pair("cs1Label", "organization") + _pair("cs1", o.slug) if o.slug else b""
    return out + _pair("cs2Label", "organizationName") + _pair("cs2", o.name) if o.name else out


def _metadata(md: Raw) -> bytes:
    """`` cs3Label=metadata cs3=<the JSON>``: the line's bytes, escaped when they need it."""
    b = bytes(md)
    if len(b) > MAX_LENGTH["cs3"]:  # more bytes than that may still be fewer characters
        return b" cs3Label=metadata" + _pair("cs3", b.decode())
    if b"\\" in b or b"=" in b or b"\n" in b or b"\r" in b:
        return b" cs3Label=metadata cs3=" + escape_extension(b.decode()).encode()
    return b" cs3Label=metadata cs3=" + b


_ACTORS: BytesCache[tuple[bytes, bytes]] = BytesCache(_actor)
_TARGETS: BytesCache[bytes] = BytesCache(_target)
_CONTEXTS: BytesCache[bytes] = BytesCache(_context)
_ORGS: BytesCache[bytes] = BytesCache(_organization, max_entries=4096)


class FastCefEncoder(FastLines, CefEncoder):
    """CefEncoder whose ``encode_lines`` writes bytes in C, else from the typed view."""

    c_format = 2  # _formats_c.CEF

    def __init__(self, actions: Mapping[str, OcsfAction] | None = None, **kw: Any):
        super().__init__(actions, **kw)
        self.plans: PlanCache[tuple[bytes, bytes]] = PlanCache(self._plan, max_entries=1024,
                                                               max_bytes=1 << 20)

    def _plan(self, action: str) -> tuple[bytes, bytes]:
        """(the header up to the extension, ``act=... outcome=...``)."""
        row = self.table[action]
        head = (f"{self._prefix}{escape_header(action[:MAX_SIGNATURE])}|{self._name(row)}|"
                f"{_SEVERITY.get(row.severity_id, 5)}|")
        act = (f"act={escape_extension(cut('act', action))}"
               f" outcome={'failure' if failed(action) else 'success'}")
        return head.encode(), act.encode()

    def _fast(self, line: bytes) -> bytes | None:
        v = decode_event(line)
        action = v.action or "unknown"
        plans = self.plans.map
        head, act = plans.get(action) or self.plans.get(action)
        t = epoch_ms_fast(v.occurred_at)
        parts = [head, b"rt=%d " % t, act] if t is not None else [head, act]
        key = bytes(v.actor)
        actor = _ACTORS.map.get(key, MISS)
        suser, cs4 = actor if actor is not MISS else _ACTORS.fill(key)  # type: ignore[misc]
        if suser:
            parts.append(suser)
        key = bytes(v.targets)
        target = _TARGETS.map.get(key, MISS)
        parts.append(target if target is not MISS else _TARGETS.fill(key))
        key = bytes(v.context)
        ctx = _CONTEXTS.map.get(key, MISS)
        parts.append(ctx if ctx is not MISS else _CONTEXTS.fill(key))
        if v.id is not UNSET:
            parts.append(_pair("externalId", v.id))
        key = bytes(v.organization)
        org = _ORGS.map.get(key, MISS)
        parts.append(org if org is not MISS else _ORGS.fill(key))
        md = v.metadata
        if truthy(md):
            parts.append(_metadata(md))
        if cs4:
            parts.append(cs4)
        return b"".join(parts)
