"""Access to the audit log is itself audited: ``audit_log.viewed`` / ``audit_log.exported``;
so is every change of a self-service stream (``log_stream.created``, ``.updated``...).

Recording goes through :class:`~auditshipd.journal.writer.AuditJournal`, which never raises: a
journal that cannot be written does not fail the request.

A view (a search with its filters, one event) is recorded once per browser session, or per
token for API calls, within ``ttl`` seconds: paging through results, reloading a page or
coming back to the same filters adds nothing. The store notes which views were recorded
(:meth:`~auditshipd.portal.auth_store.AuthStore.first_view`), so this holds across
replicas. Exports are recorded every time.

An operator (a token of every organization) reads in the operators' log, which no
organization sees. So that an organization also learns that the company running the
portal read its audit log, each organization whose events an operator's view or export
showed gets a record of its own (``shown``), without the operator's address and user
agent (the company's own, in the operators' record) and without filters that were not
limited to that organization (another organization's search words are not its
business): what was viewed (a search, an event) or exported, and how many of its events.
Within ``ttl`` a viewer's same filters tell an organization once, paging included.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from ..journal.writer import AuditJournal
from ..scrub import scrub_secrets
from .auth import cookie_name
from .auth_store import AuthStore, Session, session_key
from .tokens import Principal

__all__ = ["AccessRecorder", "shown_organizations"]


log = logging.getLogger("auditshipd.portal")
# What a view's record says beyond what was viewed: not part of the view's identity.
_OUTCOME_KEYS = ("results", "found")


def view_key(viewer: str, metadata: dict[str, Any]) -> str:
    """The key under which a view is noted: the viewer and what was viewed (filters or
    event), hashed; never the outcome (result counts)."""
    what = {k: v for k, v in metadata.items() if k not in _OUTCOME_KEYS}
    raw = msgspec.json.encode([viewer, what], order="sorted")
    return hashlib.sha256(raw).hexdigest()


def shown_organizations(events: Iterable[Mapping[str, Any]],
                        filtered: str | None = None) -> collections.Counter[str]:
    """How many of ``events`` each organization has; ``filtered`` (a search or export
    limited to that organization) is counted even when none of its events came back."""
    counts: collections.Counter[str] = collections.Counter()
    if filtered:
        counts[filtered] += 0
    for event in events:
        org = event.get("organization")
        slug = org.get("slug") if isinstance(org, Mapping) else None
        if isinstance(slug, str) and slug:
            counts[slug] += 1
    return counts


def told_metadata(metadata: dict[str, Any], organization: str, count: int) -> dict[str, Any]:
    """What an organization's record of an operator's view or export says: the view's
    kind, the event viewed, the export's format and time, how many of its events; the
    filters only when they were limited to that organization."""
    out = {k: v for k, v in metadata.items() if k not in ("filters", "results", "rows")}
    filters = metadata.get("filters")
    if isinstance(filters, Mapping) and filters.get("organization") == organization:
        out["filters"] = filters
    if out.get("view") != "event":
        out["results" if "view" in out else "rows"] = count
    return out


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
        shown: Iterable[Mapping[str, Any]] = (),
    ) -> bool:
        """Record a view unless this viewer's same view was recorded within ``ttl``;
        returns whether it was recorded. ``shown``: the events the view showed, whose
        organizations an operator's view tells (see the module docstring)."""
        if self.journal is None:
            return False
        viewer = viewer_of(request, principal, session)
        if principal.scope is None:
            filters = metadata.get("filters") or {}
            counts = shown_organizations(shown, filters.get("organization"))
            for org, count in sorted(counts.items()):
                if await self._first(view_key(viewer, {**metadata, "told": org})):
                    await self._record("audit_log.viewed", request, principal,
                                       told_metadata(metadata, org, count),
                                       organization=org, where=False)
        if not await self._first(view_key(viewer, metadata)):
            return False
        await self._record("audit_log.viewed", request, principal, metadata)
        return True

    async def _first(self, key: str) -> bool:
        """Whether the view under ``key`` is to be recorded (always without a store)."""
        if self.views is None:
            return True
        try:
            return await self.views.first_view(key, self.ttl)
        except Exception as exc:  # the store is down: record twice rather than never
            log.warning("portal: cannot check whether this view was recorded: %s",
                        scrub_secrets(str(exc)))
            return True

    async def exported(self, request: web.Request, principal: Principal, metadata: dict[str, Any]) -> None:
        await self._record("audit_log.exported", request, principal, metadata)

    async def exported_from(self, request: web.Request, principal: Principal,
                            metadata: dict[str, Any], shown: Mapping[str, int]) -> None:
        """After an operator's export: a record in each organization it held events of
        (``shown``: how many), every time, as exports are."""
        if principal.scope is not None:
            return
        for org, count in sorted(shown.items()):
            await self._record("audit_log.exported", request, principal,
                               told_metadata(metadata, org, count), organization=org, where=False)

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
