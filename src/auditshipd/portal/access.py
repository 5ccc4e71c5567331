"""Access to the audit log is itself audited: ``audit_log.viewed`` / ``audit_log.exported``;
so is every change of a self-service stream (``log_stream.created``, ``.updated``...).

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

    async def stream_changed(self, request: web.Request, principal: Principal, action: str,
                             organization: str, stream: str, metadata: dict[str, Any]) -> None:
        """``log_stream.<action>`` of a self-service stream, in that stream's organization
        (option names only in ``metadata``, never a value of a secret)."""
        await self._record(f"log_stream.{action}", request, principal, metadata,
                           organization=organization,
                           targets=[{"type": "log_stream", "name": stream}])

    async def _record(
        self, action: str, request: web.Request, principal: Principal, metadata: dict[str, Any],
        *, organization: str | None = None, targets: list[dict[str, Any]] | None = None,
    ) -> None:
        if self.journal is None:
            return
        slug = organization or principal.scope
        org = {"slug": slug} if slug else None
        context = {
            "location": request.remote or "",
            "user_agent": request.headers.get("User-Agent", "")[:256],
        }
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
