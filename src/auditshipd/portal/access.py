"""Access to the audit log is itself audited: ``audit_log.viewed`` / ``audit_log.exported``;
so is every change of a self-service stream (``log_stream.created``, ``.updated``...).

Recording goes through :class:`~auditshipd.journal.writer.AuditJournal`, which never raises: a
journal that cannot be written does not fail the request.

A view (a search with its filters, one event) is recorded once per browser session, or per
token for API calls, within ``ttl`` seconds: paging through results, reloading a page or
coming back to the same filters adds nothing. The store notes which views were recorded
(:meth:`~auditshipd.portal.auth_store.AuthStore.first_view`), so this holds across
replicas. Exports are recorded every time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import msgspec
from aiohttp import web

from ..journal.writer import AuditJournal
from ..scrub import scrub_secrets
from .auth import cookie_name
from .auth_store import AuthStore, Session, session_key
from .tokens import Principal

__all__ = ["AccessRecorder"]


log = logging.getLogger("auditshipd.portal")
# What a view's record says beyond what was viewed: not part of the view's identity.
_OUTCOME_KEYS = ("results", "found")


def view_key(viewer: str, metadata: dict[str, Any]) -> str:
    """The key under which a view is noted: the viewer and what was viewed (filters or
    event), hashed; never the outcome (result counts)."""
    what = {k: v for k, v in metadata.items() if k not in _OUTCOME_KEYS}
    raw = msgspec.json.encode([viewer, what], order="sorted")
    return hashlib.sha256(raw).hexdigest()


def viewer_of(request: web.Request, principal: Principal, session: Session | None) -> str:
    """Who views: the browser session (its stored key), else the token."""
    if session is not None:
        cookie = request.cookies.get(cookie_name(request))
        if cookie:
            return "session:" + session_key(cookie)
    return "token:" + principal.token_id


class AccessRecorder:
    """Writes one audit event per view (once per viewer and filters, see the module
    docstring) and per export."""

    def __init__(
        self, journal: AuditJournal | None, views: AuthStore | None = None, ttl: float = 8 * 3600
    ) -> None:
        self.journal = journal
        self.views = views
        self.ttl = ttl

    async def viewed(
        self,
        request: web.Request,
        principal: Principal,
        metadata: dict[str, Any],
        session: Session | None = None,
    ) -> bool:
        """Record a view unless this viewer's same view was recorded within ``ttl``;
        returns whether it was recorded."""
        if self.journal is None:
            return False
        if self.views is not None:
            key = view_key(viewer_of(request, principal, session), metadata)
            try:
                first = await self.views.first_view(key, self.ttl)
            except Exception as exc:  # the store is down: record twice rather than never
                log.warning("portal: cannot check whether this view was recorded: %s",
                            scrub_secrets(str(exc)))
                first = True
            if not first:
                return False
        await self._record("audit_log.viewed", request, principal, metadata)
        return True

    async def exported(self, request: web.Request, principal: Principal, metadata: dict[str, Any]) -> None:
        await self._record("audit_log.exported", request, principal, metadata)

    async def stream_changed(self, request: web.Request, principal: Principal, action: str,
                             organization: str, stream: str, metadata: dict[str, Any]) -> None:
        """``log_stream.<action>`` of a self-service stream, in that stream's organization
        (option names only in ``metadata``, never a value of a secret).

        An operator's change (a token of every organization) shows there who made it
        (the token's name and role) but not from where: the operator's address and user
        agent belong to the company running the portal, and the organization's record
        reaches the organization's admins and its own streams. They are kept in a second
        record of the same action without an organization (the operators' log), which
        names the organization among its targets."""
        target = {"type": "log_stream", "name": stream}
        if principal.scope == organization:
            await self._record(f"log_stream.{action}", request, principal, metadata,
                               organization=organization, targets=[target])
            return
        await self._record(f"log_stream.{action}", request, principal, metadata,
                           organization=organization, targets=[target], where=False)
        await self._record(f"log_stream.{action}", request, principal, metadata,
                           targets=[target, {"type": "organization", "name": organization}])

    async def _record(
        self, action: str, request: web.Request, principal: Principal, metadata: dict[str, Any],
        *, organization: str | None = None, targets: list[dict[str, Any]] | None = None,
        where: bool = True,
    ) -> None:
        """Record ``action``; with ``where``, the caller's address and user agent too."""
        if self.journal is None:
            return
        slug = organization or principal.scope
        org = {"slug": slug} if slug else None
        context = {
            "location": request.remote or "",
            "user_agent": request.headers.get("User-Agent", "")[:256],
        } if where else {}
        await asyncio.to_thread(
            self.journal.record,
            action,
            actor=principal.as_actor(),
            targets=targets or [{"type": "audit_log", "name": "portal"}],
            organization=org,
            context=context,
            metadata=metadata,
        )

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
