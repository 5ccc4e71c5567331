"""ArcSight Common Event Format (CEF:0): one text line per event.

``CEF:0|auditshipd|auditshipd|VERSION|<action>|<name>|<severity>|<extension>``. Header
fields escape ``\\`` and ``|``; extension values escape ``\\``, ``=`` and line breaks
(``\\n``, ``\\r``), so a value can never end the line or start a forged key. Severity
(0-10) follows the OCSF severity of the action; the name is the OCSF class and
activity. Custom strings: ``cs1`` organization (slug), ``cs2`` organization name,
``cs3`` metadata (JSON), ``cs4`` actor type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .base import Encoder
from .event import epoch_ms, failed, ip_or_none, party, target_user, text
from .ocsf_actions import CLASSES, ActionTable, OcsfAction

__all__ = ["MAX_LENGTH", "CefEncoder", "cut", "escape_extension", "escape_header"]

_encode = msgspec.json.Encoder().encode
# OCSF severity_id -> CEF 0-10 (Low 0-3, Medium 4-6, High 7-8, Very-High 9-10).
_SEVERITY = {0: 0, 1: 1, 2: 3, 3: 5, 4: 7, 5: 9, 6: 10, 99: 5}
_HEADER = str.maketrans({"\\": "\\\\", "|": "\\|", "\n": " ", "\r": " "})
_EXT = str.maketrans({"\\": "\\\\", "=": "\\=", "\n": "\\n", "\r": "\\r"})
# The ArcSight extension dictionary's maximum lengths (characters) of the keys written
# here; a longer value is cut to it (before escaping). Labels are short constants.
MAX_LENGTH = {"act": 63, "outcome": 63, "suser": 1023, "duser": 1023,
              "requestClientApplication": 1023, "externalId": 40, "cs1": 4000, "cs2": 4000,
              "cs3": 4000, "cs4": 4000}
# Header fields: Device Event Class ID (the action) and Name.
MAX_SIGNATURE, MAX_NAME = 1023, 512
#: where an IPv6 ``context.location`` goes (``src`` is an IPv4 address in CEF; an
#: IPv4-mapped one is read as its IPv4 address by ``ip_or_none``, and goes to ``src``)
IPV6_LABEL = "Source IPv6 Address"


def cut(key: str, value: str) -> str:
    """``value`` cut to the dictionary's maximum length for ``key``."""
    limit = MAX_LENGTH.get(key)
    return value[:limit] if limit is not None and len(value) > limit else value


def escape_header(value: str) -> str:
    """A CEF header field: ``\\`` and ``|`` escaped; a line break (not allowed in a
    header) becomes a space."""
    # Most values need nothing: four C-level scans beat translate's per-character lookups.
    if "\\" in value or "|" in value or "\n" in value or "\r" in value:
        return value.translate(_HEADER)
    return value


def escape_extension(value: str) -> str:
    """A CEF extension value: ``\\``, ``=`` escaped; line breaks as ``\\n`` / ``\\r``."""
    if "\\" in value or "=" in value or "\n" in value or "\r" in value:
        return value.translate(_EXT)
    return value


class CefEncoder(Encoder):
    name = "cef"
    json = False

    def __init__(self, actions: Mapping[str, OcsfAction] | None = None, **_: Any):
        from .. import __version__  # here: the package may still be importing config

        self.table = ActionTable(actions)
        self._prefix = "CEF:0|auditshipd|auditshipd|" + escape_header(__version__) + "|"
        self._names: dict[OcsfAction, str] = {}

    def _name(self, row: OcsfAction) -> str:
        name = self._names.get(row)
        if name is None:
            cls = CLASSES[row.class_uid]
            activity = row.activity_name if row.activity_id == 99 and row.activity_name \
                else cls.activities.get(row.activity_id, "Other")
            name = self._names[row] = escape_header(f"{cls.name}: {activity}"[:MAX_NAME])
        return name

    def encode(self, e: dict[str, Any]) -> bytes:
        action = text(e.get("action")) or "unknown"
        row = self.table[action]
        ext: list[tuple[str, str]] = []
        t = epoch_ms(e.get("occurred_at"))
        if t is not None:
            ext.append(("rt", str(t)))
        ext.append(("act", action))
        ext.append(("outcome", "failure" if failed(action) else "success"))
        actor = party(e.get("actor"))
        if actor is not None and actor.label:
            ext.append(("suser", actor.label))
        target = target_user(e.get("targets"))
        if target is not None and target.label:
            ext.append(("duser", target.label))
        ctx = e.get("context")
        if isinstance(ctx, dict):
            ip = ip_or_none(ctx.get("location"))
            if ip is not None:
                ext += ((("c6a2Label", IPV6_LABEL), ("c6a2", ip)) if ":" in ip
                        else (("src", ip),))
            ua = text(ctx.get("user_agent"))
            if ua is not None:
                ext.append(("requestClientApplication", ua))
        if "id" in e:
            ext.append(("externalId", str(e["id"])))
        org = e.get("organization")
        if isinstance(org, dict):
            slug, oname = text(org.get("slug")), text(org.get("name"))
            if slug:
                ext += (("cs1Label", "organization"), ("cs1", slug))
            if oname:
                ext += (("cs2Label", "organizationName"), ("cs2", oname))
        md = e.get("metadata")
        if md:
            ext += (("cs3Label", "metadata"), ("cs3", _encode(md).decode()))
        if actor is not None and actor.type:
            ext += (("cs4Label", "actorType"), ("cs4", actor.type))
        head = (f"{self._prefix}{escape_header(action[:MAX_SIGNATURE])}|{self._name(row)}|"
                f"{_SEVERITY.get(row.severity_id, 5)}|")
        body = " ".join(f"{k}={escape_extension(cut(k, v))}" for k, v in ext)
        return (head + body).encode()
