"""What each token role may do in the portal.

``admin`` reads events, exports them and sees the streams; ``viewer`` reads events (the
list, search, one event) and nothing else: no export, whose bulk copies leave the portal,
and no streams, whose errors describe the operator's infrastructure.
"""

from __future__ import annotations

from typing import Literal

from .tokens import Principal

__all__ = ["PERMISSIONS", "Permission", "allowed"]

Permission = Literal["read_events", "export", "streams"]
PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset({"read_events", "export", "streams"}),
    "viewer": frozenset({"read_events"}),
}


def allowed(principal: Principal, permission: Permission) -> bool:
    """Whether ``principal``'s role grants ``permission`` (an unknown role grants nothing)."""
    return permission in PERMISSIONS.get(principal.role, frozenset())
