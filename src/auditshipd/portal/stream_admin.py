"""What an organization's admin may do with its self-service streams, once for the API and
the page: create, edit, pause, resume, delete, send a test event.

Every operation is checked against the principal's scope (an organization's token sees
and changes only its own streams; an operator's ``'*'`` token sees and changes all, but
creates none: a stream belongs to the organization whose token created it), validated
with the sink type's own schema (:mod:`.stream_defs`), its destination checked against
SSRF (:mod:`auditshipd.netguard`), its secrets sealed (:mod:`.stream_secrets`), and
recorded as an audit event ``log_stream.<what>`` with the changed option names only.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from ..delivery.batch import Batch
from ..errors import SinkError
from ..journal.writer import EVENT_VERSION, new_event_id
from ..netguard import BlockedDestination, DestinationPolicy, GuardedResolver, check_destination
from ..plugin import SinkContext, SinkType
from ..scrub import scrub_secrets, sink_secrets
from ..timestamps import now_rfc3339
from .access import AccessRecorder
from .config import PortalConfig
from .stream_defs import (
    StreamChange,
    StreamDefinition,
    StreamRequestError,
    check_definition,
    destination_url,
    merge_options,
    split_secrets,
)
from .stream_secrets import SecretBox, SecretsKeyError, load_secret_box
from .stream_store import StreamStore
from .tokens import Principal, now_text

__all__ = ["NotFound", "RateLimited", "StreamAdmin", "TestAnswer"]

log = logging.getLogger("auditshipd.portal")
TEST_TIMEOUT = 30.0


class NotFound(LookupError):
    """No such stream, or not one this principal may see."""


class RateLimited(Exception):
    """Too many test events for this stream; ``retry_after`` seconds until the next."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


@dataclass(frozen=True)
class TestAnswer:
    """What the destination answered to a test event."""

    delivered: bool
    status: int | None
    error: str | None
    event_id: str

    def as_json(self) -> dict[str, Any]:
        return {"delivered": self.delivered, "status": self.status, "error": self.error,
                "event_id": self.event_id}


class StreamAdmin:
    """The stream operations of one portal, on its store."""

    def __init__(self, config: Any, portal: PortalConfig, store: StreamStore,
                 recorder: AccessRecorder, resolver: Any = None) -> None:
        self.config = config
        self.portal = portal
        self.store = store
        self.recorder = recorder
        self.policy = DestinationPolicy.parse(portal.stream_allow_hosts)
        # Resolves names for the destination checks (None: the system's; tests inject).
        self.resolver = resolver
        self._types: dict[str, SinkType] | None = None

    # -- plumbing ---------------------------------------------------------------------

    def sink_types(self) -> dict[str, SinkType]:
        if self._types is None:
            from ..plugins.manager import build_plugin_manager, sink_types

            self._types = sink_types(build_plugin_manager([]))
        return self._types

    def box(self) -> SecretBox:
        return load_secret_box(self.portal.secrets_key_file)

    async def visible(self, principal: Principal) -> list[StreamDefinition]:
        return await self.store.list(principal.scope)

    async def visible_scope(self, scope: str | None) -> list[StreamDefinition]:
        return await self.store.list(scope)

    async def find(self, principal: Principal, stream_id: str) -> StreamDefinition:
        if not StreamDefinition.is_id(stream_id):  # nothing a store could hold: no query
            raise NotFound(stream_id)
        d = await self.store.get(stream_id)
        if d is None or (principal.scope is not None and d.organization != principal.scope):
            raise NotFound(stream_id)  # another organization's stream does not exist
        return d

    def _full_options(self, d: StreamDefinition) -> dict[str, Any]:
        return {**d.options, **(self.box().open(d.id, d.sealed) if d.sealed else {})}

    async def _checked(self, d: StreamDefinition, options: dict[str, Any]) -> StreamDefinition:
        """``d`` with ``options`` validated, its destination checked, secrets sealed."""
        check_definition(d.organization, d.name, d.type, options, self.sink_types())
        url = destination_url(d.type, options)
        if url:
            try:
                await check_destination(url, self.policy, self.resolver)
            except BlockedDestination as exc:
                key = "endpoint_url" if d.type == "s3" else "url"
                raise StreamRequestError(str(exc), param=f"options.{key}") from None
        plain, hidden = split_secrets(self.sink_types()[d.type], options)
        sealed = self.box().seal(d.id, hidden) if hidden else None
        return replace(d, options=plain, sealed=sealed, secret_names=sorted(hidden))

    # -- operations -------------------------------------------------------------------

    async def create(self, request: web.Request, principal: Principal,
                     change: StreamChange) -> StreamDefinition:
        if principal.scope is None:
            raise StreamRequestError("a stream belongs to one organization: create it with a"
                                     " token of that organization (operators write stream"
                                     " files)", param="organization")
        assert change.name is not None and change.type is not None
        now = now_text()
        draft = StreamDefinition(
            StreamDefinition.new_id(), principal.scope, change.name, change.type, {}, None, [],
            bool(change.paused), now, now, principal.name, principal.name)
        d = await self._checked(draft, {k: v for k, v in change.options.items() if v is not None})
        await self.store.insert(d, self.portal.max_streams_per_organization)
        await self.recorder.stream_changed(request, principal, "created", d.organization, d.name, {
            "stream": d.name, "type": d.type, "options": sorted({*d.options, *d.secret_names}),
            "paused": d.paused})
        return d

    async def update(self, request: web.Request, principal: Principal, stream_id: str,
                     change: StreamChange) -> StreamDefinition:
        d = await self.find(principal, stream_id)
        new = replace(d, updated_at=now_text(), updated_by=principal.name)
        changed: list[str] = []
        if change.options:
            try:
                current = self._full_options(d)
            except SecretsKeyError:
                # Sealed under another key: unreadable, but replaceable by entering them all.
                if not set(d.secret_names) <= {k for k, v in change.options.items() if v is not None}:
                    raise
                current = dict(d.options)
            merged = merge_options(current, change.options)
            changed += sorted(k for k in {*current, *merged} if current.get(k) != merged.get(k))
            new = await self._checked(new, merged)
        if changed:
            if not await self.store.update(new):
                raise NotFound(stream_id)
            await self.recorder.stream_changed(request, principal, "updated", d.organization,
                                               new.name, {"stream": new.name, "changed": changed})
        if change.paused is not None and change.paused != d.paused:
            new = await self.set_paused(request, principal, stream_id, change.paused)
        return new if changed or change.paused is not None else d

    async def set_paused(self, request: web.Request, principal: Principal, stream_id: str,
                         paused: bool) -> StreamDefinition:
        d = await self.find(principal, stream_id)
        if d.paused == paused:
            return d
        new = replace(d, paused=paused, updated_at=now_text(), updated_by=principal.name)
        if not await self.store.update(new):
            raise NotFound(stream_id)
        await self.recorder.stream_changed(request, principal, "paused" if paused else "resumed",
                                           d.organization, d.name, {"stream": d.name})
        return new

    async def delete(self, request: web.Request, principal: Principal, stream_id: str) -> None:
        d = await self.find(principal, stream_id)
        if not await self.store.delete(d.id):
            raise NotFound(stream_id)
        await self.recorder.stream_changed(request, principal, "deleted", d.organization, d.name,
                                           {"stream": d.name, "type": d.type})

    async def send_test(self, request: web.Request, principal: Principal,
                        stream_id: str) -> TestAnswer:
        """Deliver one synthetic ``log_stream.test_event`` to this stream only, and say
        what its destination answered (errors scrubbed of the stream's secrets)."""
        d = await self.find(principal, stream_id)
        wait = await self.store.take_test_slot(d.id, self.portal.stream_tests_per_minute)
        if wait is not None:
            raise RateLimited(wait)
        options = self._full_options(d)
        sc = check_definition(d.organization, d.name, d.type, options, self.sink_types())
        event = {"id": new_event_id(), "action": "log_stream.test_event",
                 "occurred_at": now_rfc3339(), "version": EVENT_VERSION,
                 "organization": {"slug": d.organization},
                 "actor": {"type": "portal_token", "name": principal.name},
                 "metadata": {"stream": d.name, "test": True}}
        answer = await self._deliver(sc, event)
        await self.recorder.stream_changed(request, principal, "test_event_sent", d.organization,
                                           d.name, {"stream": d.name, **answer.as_json()})
        return answer

    async def _deliver(self, sc: Any, event: dict[str, Any]) -> TestAnswer:
        secrets = sink_secrets(sc)
        url = destination_url(sc.type, sc.raw)
        resolver = GuardedResolver(self.policy, self.resolver)
        sink = None
        try:
            if url:
                await check_destination(url, self.policy, self.resolver)
            assert sc.sink_type is not None
            context = SinkContext(name=sc.name, state_dir=self.config.state_dir,
                                  logger=logging.getLogger(f"auditshipd.sink.{sc.name}"),
                                  resolver=resolver)
            sink = sc.sink_type.build(sc.name, sc.options, context)
            await asyncio.wait_for(sink.start(), TEST_TIMEOUT)
            await asyncio.wait_for(sink.send(Batch([event])), TEST_TIMEOUT)
            return TestAnswer(True, getattr(sink, "last_status", None), None, event["id"])
        except (SinkError, BlockedDestination, OSError, asyncio.TimeoutError, ValueError) as exc:
            # ValueError: what a client library refuses to send (a header it finds unsafe)
            text = str(exc) or type(exc).__name__
            if isinstance(exc, asyncio.TimeoutError):
                text = f"no answer within {TEST_TIMEOUT:g}s"
            found = re.search(r"\bHTTP (\d{3})\b|answered (\d{3})\b", text)
            status = int(next(g for g in found.groups() if g)) if found else None
            return TestAnswer(False, status, scrub_secrets(text, secrets), event["id"])
        finally:
            if sink is not None:
                try:
                    await sink.close()
                except Exception as exc:  # the answer is what matters; say why it failed
                    log.warning("closing the test sink of %s: %s", sc.name,
                                scrub_secrets(str(exc), secrets))
            await resolver.close()
