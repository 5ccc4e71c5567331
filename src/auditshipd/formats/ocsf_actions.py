"""The OCSF action table: which OCSF class and activity each audit action becomes.

A data table, documented in docs/formats.md, that operators extend or override from
TOML (``[formats.ocsf.actions]``). An action found nowhere gets the fallback:
Entity Management (3004) with the activity its last word names (``*.created`` ->
Create, ``*.deleted`` -> Delete, ...; Other (99) when it names none): never an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["ACTIONS", "CLASSES", "OcsfAction", "ActionTable", "parse_actions"]

#: OCSF schema version the output follows (``metadata.version``).
OCSF_VERSION = "1.5.0"


@dataclass(frozen=True)
class OcsfClass:
    uid: int
    name: str
    category_name: str
    activities: Mapping[int, str]


_IAM, _APP = "Identity & Access Management", "Application Activity"
#: The classes the encoder knows how to fill (their required objects), with the
#: activity names of OCSF 1.5.0.
CLASSES: dict[int, OcsfClass] = {c.uid: c for c in (
    OcsfClass(3001, "Account Change", _IAM, {
        0: "Unknown", 1: "Create", 2: "Enable", 3: "Password Change", 4: "Password Reset",
        5: "Disable", 6: "Delete", 7: "Attach Policy", 8: "Detach Policy", 9: "Lock",
        10: "MFA Factor Enable", 11: "MFA Factor Disable", 12: "Unlock", 99: "Other"}),
    OcsfClass(3002, "Authentication", _IAM, {
        0: "Unknown", 1: "Logon", 2: "Logoff", 3: "Authentication Ticket",
        4: "Service Ticket Request", 5: "Service Ticket Renew", 6: "Preauth", 99: "Other"}),
    OcsfClass(3004, "Entity Management", _IAM, {
        0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 5: "Move",
        6: "Enroll", 7: "Unenroll", 8: "Enable", 9: "Disable", 10: "Activate",
        11: "Deactivate", 12: "Suspend", 13: "Resume", 99: "Other"}),
    OcsfClass(3005, "User Access Management", _IAM, {
        0: "Unknown", 1: "Assign Privileges", 2: "Revoke Privileges", 99: "Other"}),
    OcsfClass(3006, "Group Management", _IAM, {
        0: "Unknown", 1: "Assign Privileges", 2: "Revoke Privileges", 3: "Add User",
        4: "Remove User", 5: "Delete", 6: "Create", 99: "Other"}),
    OcsfClass(6001, "Web Resources Activity", _APP, {
        0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 5: "Search",
        6: "Import", 7: "Export", 8: "Share", 99: "Other"}),
    OcsfClass(6003, "API Activity", _APP, {
        0: "Unknown", 1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}),
)}


@dataclass(frozen=True)
class OcsfAction:
    """One row of the table. ``activity_name`` names an activity 99 (Other)."""

    class_uid: int
    activity_id: int
    activity_name: str | None = None
    severity_id: int = 1

    @property
    def category_uid(self) -> int:
        return self.class_uid // 1000

    @property
    def type_uid(self) -> int:
        return self.class_uid * 100 + self.activity_id


def _a(class_uid: int, activity_id: int, activity_name: str | None = None,
       severity_id: int = 1) -> OcsfAction:
    return OcsfAction(class_uid, activity_id, activity_name, severity_id)


#: The built-in table (docs/formats.md lists it). Keys are exact action names.
ACTIONS: dict[str, OcsfAction] = {
    # Accounts: Account Change (3001)
    "user.created": _a(3001, 1),
    "user.provisioned": _a(3001, 1),
    "dsync.user.created": _a(3001, 1),
    "user.deprovisioned": _a(3001, 6),
    "user.deleted": _a(3001, 6),
    "dsync.user.deleted": _a(3001, 6),
    "user.invited": _a(3001, 99, "Invite"),
    "user.updated": _a(3001, 99, "Update"),
    "dsync.user.updated": _a(3001, 99, "Update"),
    "user.enabled": _a(3001, 2),
    "user.disabled": _a(3001, 5),
    "user.suspended": _a(3001, 5),
    "user.password_changed": _a(3001, 3),
    "user.password_reset": _a(3001, 4),
    "user.locked": _a(3001, 9, severity_id=2),
    "user.unlocked": _a(3001, 12),
    "user.mfa_enrolled": _a(3001, 10),
    "user.mfa_removed": _a(3001, 11, severity_id=2),
    # Roles: User Access Management (3005)
    "user.role_changed": _a(3005, 1),
    "organization_membership.role_changed": _a(3005, 1),
    "organization_membership.created": _a(3005, 1),
    "organization_membership.deleted": _a(3005, 2),
    "user.role_removed": _a(3005, 2),
    # Groups: Group Management (3006)
    "group.created": _a(3006, 6),
    "dsync.group.created": _a(3006, 6),
    "group.deleted": _a(3006, 5),
    "dsync.group.deleted": _a(3006, 5),
    "group.user_added": _a(3006, 3),
    "dsync.group.user_added": _a(3006, 3),
    "group.user_removed": _a(3006, 4),
    "dsync.group.user_removed": _a(3006, 4),
    # Sign-ins: Authentication (3002)
    "user.signed_in": _a(3002, 1),
    "user.signed_out": _a(3002, 2),
    "user.sign_in_failed": _a(3002, 1, severity_id=2),
    "session.created": _a(3002, 1),
    "session.revoked": _a(3002, 2),
    # Settings, API keys, SSO, domains: Entity Management (3004)
    "admin.settings_changed": _a(3004, 3),
    "organization.updated": _a(3004, 3),
    "organization.domain_verified": _a(3004, 99, "Verify"),
    "organization.domain_added": _a(3004, 1),
    "organization.domain_removed": _a(3004, 4),
    "api_key.created": _a(3004, 1),
    "api_key.revoked": _a(3004, 4),
    "api_key.deleted": _a(3004, 4),
    "sso.connection.created": _a(3004, 1),
    "sso.connection.activated": _a(3004, 10),
    "sso.connection.deactivated": _a(3004, 11, severity_id=2),
    "sso.connection.deleted": _a(3004, 4),
    "scim.sync.completed": _a(3004, 99, "Sync"),
    "directory.sync.completed": _a(3004, 99, "Sync"),
    # Audit log exports: Web Resources Activity (6001), Export
    "audit_log.exported": _a(6001, 7),
    "audit_logs.exported": _a(6001, 7),
}

# The fallback: Entity Management, activity from the action's last word.
FALLBACK_CLASS = 3004
_FALLBACK_VERBS = {
    "created": 1, "added": 1, "provisioned": 1,
    "read": 2, "viewed": 2, "exported": 2, "listed": 2,
    "updated": 3, "changed": 3, "modified": 3, "renamed": 3,
    "deleted": 4, "removed": 4, "revoked": 4, "deprovisioned": 4,
    "moved": 5, "enrolled": 6, "unenrolled": 7, "enabled": 8, "disabled": 9,
    "activated": 10, "deactivated": 11, "suspended": 12, "resumed": 13,
}


def fallback(action: str) -> OcsfAction:
    """The documented mapping of an action the table does not hold."""
    last = action.rsplit(".", 1)[-1]
    verb = last.rsplit("_", 1)[-1]
    activity = _FALLBACK_VERBS.get(last) or _FALLBACK_VERBS.get(verb)
    if activity is None:
        return OcsfAction(FALLBACK_CLASS, 99, last or "Other")
    return OcsfAction(FALLBACK_CLASS, activity)


class ActionTable:
    """The built-in table merged with the operator's rows; unknown actions fall back."""

    __slots__ = ("_rows", "_cache")

    def __init__(self, overrides: Mapping[str, OcsfAction] | None = None):
        self._rows = {**ACTIONS, **(overrides or {})}
        self._cache: dict[str, OcsfAction] = {}

    def __getitem__(self, action: str) -> OcsfAction:
        row = self._rows.get(action)
        if row is not None:
            return row
        row = self._cache.get(action)
        if row is None:
            row = fallback(action)
            if len(self._cache) < 4096:  # bounded: actions are few, but input is input
                self._cache[action] = row
        return row

    def __contains__(self, action: str) -> bool:
        return action in self._rows


_ROW_KEYS = {"class_uid", "activity_id", "activity_name", "severity_id"}


def parse_actions(table: Any, *, source: str, key: str) -> dict[str, OcsfAction]:
    """Validate ``[formats.ocsf.actions]``: ``"action" = { class_uid, activity_id,
    activity_name?, severity_id? }``. Errors name the file and the key."""
    if not isinstance(table, dict):
        raise ConfigError("must be a table of action = { class_uid, activity_id }",
                          file=source, key=key)
    out: dict[str, OcsfAction] = {}
    for action, row in table.items():
        where = f'{key}."{action}"'
        if not isinstance(row, dict):
            raise ConfigError("must be an inline table { class_uid = ..., activity_id = ... }",
                              file=source, key=where)
        unknown = set(row) - _ROW_KEYS
        if unknown:
            raise ConfigError("unknown key", file=source, key=f"{where}.{sorted(unknown)[0]}")
        for k in ("class_uid", "activity_id"):
            if not isinstance(row.get(k), int) or isinstance(row.get(k), bool):
                raise ConfigError("missing or not an integer", file=source, key=f"{where}.{k}")
        cls = CLASSES.get(row["class_uid"])
        if cls is None:
            known = ", ".join(str(u) for u in CLASSES)
            raise ConfigError(f"unsupported OCSF class (supported: {known})",
                              file=source, key=f"{where}.class_uid")
        if row["activity_id"] not in cls.activities:
            known = ", ".join(str(u) for u in cls.activities)
            raise ConfigError(f"not an activity of {cls.name} (known: {known})",
                              file=source, key=f"{where}.activity_id")
        name = row.get("activity_name")
        if name is not None and not (isinstance(name, str) and name):
            raise ConfigError("must be a non-empty string", file=source,
                              key=f"{where}.activity_name")
        sev = row.get("severity_id", 1)
        if not isinstance(sev, int) or isinstance(sev, bool) or sev not in (0, 1, 2, 3, 4, 5, 6, 99):
            raise ConfigError("must be an OCSF severity_id (0-6 or 99)", file=source,
                              key=f"{where}.severity_id")
        out[action] = OcsfAction(row["class_uid"], row["activity_id"], name, sev)
    return out
