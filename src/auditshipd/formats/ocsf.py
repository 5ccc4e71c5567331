"""OCSF (Open Cybersecurity Schema Framework) events, schema version in ``OCSF_VERSION``.

Each action becomes the class and activity the action table gives (ocsf_actions.py);
the class's required objects are filled from what the redacted event holds:
``user`` (the target person, or the actor for sign-ins), ``entity`` (Entity Management),
``privileges`` (User Access Management), ``group`` (Group Management), ``web_resources``
(Web Resources Activity), ``api`` (API Activity), ``service`` (Authentication).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .base import Encoder
from .event import (
    Party,
    epoch_ms,
    failed,
    first_entity,
    ip_or_none,
    party,
    target_user,
    text,
)
from .ocsf_actions import CLASSES, OCSF_VERSION, ActionTable, OcsfAction

__all__ = ["OcsfEncoder"]

_encode = msgspec.json.Encoder().encode
_SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High",
             5: "Critical", 6: "Fatal", 99: "Other"}
_ROLE_KEYS = ("new_role", "role", "to")
# Where OCSF 1.5.0 (no profiles) has a top-level ``user`` / needs one / has no ``actor``;
# what a class cannot hold goes to ``unmapped`` rather than out of the event.
_HAS_USER = frozenset({3001, 3002, 3005, 3006})
_NEEDS_USER = frozenset({3001, 3002, 3005})
_NO_ACTOR = frozenset({6001})


def _user(p: Party, org: dict[str, str] | None) -> dict[str, Any]:
    """An OCSF ``user``: ``name`` is the display name, else the email (the schema wants
    one of name/uid/account; our customer-facing handle is the email)."""
    u: dict[str, Any] = {}
    if p.email:
        u["email_addr"] = p.email
    name = p.name or p.email or p.type
    if name:
        u["name"] = name
    if p.type == "user":
        u["type"], u["type_id"] = "User", 1
    elif p.type == "admin":
        u["type"], u["type_id"] = "Admin", 2
    elif p.type:
        u["type"], u["type_id"] = p.type, 99
    if org:
        u["org"] = org
    return u


class OcsfEncoder(Encoder):
    name = "ocsf"

    def __init__(self, actions: Mapping[str, OcsfAction] | None = None, *,
                 product_name: str = "auditshipd", vendor_name: str = "auditshipd"):
        self.table = ActionTable(actions)
        self.product = {"name": product_name, "vendor_name": vendor_name}

    def encode(self, event: dict[str, Any]) -> bytes:
        return _encode(self.build(event))

    def build(self, e: dict[str, Any]) -> dict[str, Any]:
        action = text(e.get("action")) or "unknown"
        row = self.table[action]
        cls = CLASSES[row.class_uid]
        activity = row.activity_name if row.activity_id == 99 and row.activity_name \
            else cls.activities.get(row.activity_id, "Other")
        ok = not failed(action)
        time_ms = epoch_ms(e.get("occurred_at"))
        unmapped: dict[str, Any] = {}
        if time_ms is None:  # the epoch, not the clock: encoding again writes the same bytes
            time_ms = 0
            unmapped["occurred_at"] = e.get("occurred_at")
        org_in = e.get("organization")
        org = None
        meta: dict[str, Any] = {"version": OCSF_VERSION, "product": self.product,
                                "event_code": action}
        if isinstance(org_in, dict):
            slug, oname = text(org_in.get("slug")), text(org_in.get("name"))
            org = {k: v for k, v in (("uid", slug), ("name", oname)) if v}
            if slug:
                meta["tenant_uid"] = slug
        if "id" in e:
            meta["uid"] = str(e["id"])
        out: dict[str, Any] = {
            "class_uid": row.class_uid, "class_name": cls.name,
            "category_uid": row.category_uid, "category_name": cls.category_name,
            "activity_id": row.activity_id, "activity_name": activity,
            "type_uid": row.type_uid, "type_name": f"{cls.name}: {activity}",
            "severity_id": row.severity_id, "severity": _SEVERITY[row.severity_id],
            "status_id": 1 if ok else 2, "status": "Success" if ok else "Failure",
            "time": time_ms, "message": action, "metadata": meta,
        }
        actor = party(e.get("actor"))
        targets = e.get("targets")
        uid = row.class_uid
        if actor is not None:
            actor_user = {"user": _user(actor, org)}
            if uid in _NO_ACTOR:
                unmapped["actor"] = actor_user
            else:
                out["actor"] = actor_user
        target = target_user(targets)
        if uid == 3002:  # a sign-in: the user is the one who signed in
            who = actor or target
            out["service"] = {"name": self.product["name"]}
        else:
            who = target or (actor if uid in _NEEDS_USER else None)
        if who is not None:
            if uid in _HAS_USER:
                out["user"] = _user(who, org)
            else:
                unmapped["user"] = _user(who, org)
        elif uid in _NEEDS_USER:
            out["user"] = {"name": "unknown"}
        if uid == 3004:
            out["entity"] = self._entity(targets, action)
        elif uid == 3005:
            out["privileges"] = self._privileges(e.get("metadata"), action)
        elif uid == 3006:
            group = next((p for p in map(party, targets if isinstance(targets, list) else ())
                          if p is not None and p.type == "group"), None)
            out["group"] = {"name": (group.name or group.email) if group and group.label
                            else "unknown"}
        elif uid == 6001:
            out["web_resources"] = [self._entity(targets, action)]
        elif uid == 6003:
            out["api"] = {"operation": action}
            if "actor" not in out:
                out["actor"] = {"app_name": self.product["name"]}
            ctx_in = e.get("context")
            if not (isinstance(ctx_in, dict) and ip_or_none(ctx_in.get("location"))):
                out["src_endpoint"] = {"name": "unknown"}  # required; no IP left the machine
        ctx = e.get("context")
        if isinstance(ctx, dict):
            ip = ip_or_none(ctx.get("location"))
            if ip is not None:
                out["src_endpoint"] = {"ip": ip}
            elif text(ctx.get("location")):
                unmapped["location"] = ctx["location"]
            ua = text(ctx.get("user_agent"))
            if ua is not None:
                out["http_request"] = {"user_agent": ua}
        md = e.get("metadata")
        if md:
            unmapped["metadata"] = md
        if isinstance(targets, list) and len(targets) > 1:
            unmapped["targets"] = targets
        if unmapped:
            out["unmapped"] = unmapped
        return out

    @staticmethod
    def _entity(targets: Any, action: str) -> dict[str, Any]:
        p = first_entity(targets)
        if p is None:  # nothing but people acted on: the entity is the kind in the action
            kind = action.rsplit(".", 1)[0] if "." in action else action
            return {"name": kind, "type": kind}
        ent: dict[str, Any] = {"name": p.name or p.email or p.type}
        if p.type:
            ent["type"] = p.type
        return ent

    @staticmethod
    def _privileges(metadata: Any, action: str) -> list[str]:
        if isinstance(metadata, dict):
            for k in _ROLE_KEYS:
                v = metadata.get(k)
                if isinstance(v, str) and v:
                    return [v]
        return [action]
