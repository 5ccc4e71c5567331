"""Access to the audit log is itself audited: ``audit_log.viewed`` / ``audit_log.exported``.

Recording goes through :class:`~auditshipd.journal.writer.AuditJournal`, which never raises: a
journal that cannot be written does not fail the request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..journal.writer import AuditJournal
from .tokens import Principal

__all__ = ["AccessRecorder"]


class AccessRecorder:
    """Writes one audit event per search, event view and export."""

    def __init__(self, journal: AuditJournal | None) -> None:
        self.journal = journal

    async def viewed(self, request: web.Request, principal: Principal, metadata: dict[str, Any]) -> None:
        await self._record("audit_log.viewed", request, principal, metadata)

    async def exported(self, request: web.Request, principal: Principal, metadata: dict[str, Any]) -> None:
        await self._record("audit_log.exported", request, principal, metadata)

    async def _record(
        self, action: str, request: web.Request, principal: Principal, metadata: dict[str, Any]
    ) -> None:
        if self.journal is None:
            return
        organization = {"slug": principal.scope} if principal.scope else None
        context = {
            "location": request.remote or "",
            "user_agent": request.headers.get("User-Agent", "")[:256],
        }
        await asyncio.to_thread(
            self.journal.record,
            action,
            actor=principal.as_actor(),
            targets=[{"type": "audit_log", "name": "portal"}],
            organization=organization,
            context=context,
            metadata=metadata,
        )

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
