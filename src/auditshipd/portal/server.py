"""Serving the portal: :func:`start_portal` for ``auditshipd run`` and ``auditshipd portal``."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiohttp import web

from ..config.collect import with_lines
from ..config.loading import config_text
from ..errors import ConfigError
from ..journal.writer import daemon_journal
from ..netguard import is_loopback
from .access import AccessRecorder
from .app import build_app, template_environment
from .auth_store import AuthStore, import_token_file
from .backend import auth_store, event_store, stream_store
from .config import PortalConfig, portal_config
from .guard import PortalState
from .store import EventStore
from .stream_admin import StreamAdmin
from .tokens import TokenError, legacy_token_path

__all__ = ["PortalServer", "start_portal"]

log = logging.getLogger("auditshipd.portal")


class PortalServer:
    """A running portal. ``url`` is where it listens; ``close()`` stops it."""

    def __init__(self, runner: web.AppRunner, state: PortalState, url: str) -> None:
        self.runner = runner
        self.state = state
        self.url = url

    @property
    def store(self) -> EventStore:
        return self.state.store

    @property
    def tokens(self) -> AuthStore:
        return self.state.tokens

    async def close(self) -> None:
        errors: list[BaseException] = []
        for step in (self.runner.cleanup, self.state.store.close):
            try:
                await step()
            except Exception as exc:  # keep cleaning up the rest
                errors.append(exc)
        self.state.recorder.close()
        if errors:
            log.warning("errors while stopping the portal: %s", "; ".join(map(str, errors)))


def _ssl_context(pc: PortalConfig) -> ssl.SSLContext | None:
    if not pc.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(pc.tls_cert), str(pc.tls_key))
    return context


def _cannot_listen(config: Any, pc: PortalConfig, host: str, port: int,
                   exc: OSError) -> ConfigError:
    """The portal cannot listen on ``host:port``: a configuration error naming
    ``portal.listen`` when that is where the address comes from."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = f"cannot listen on {address}: {exc.strerror or exc}"
    source = getattr(config, "source", None)
    if (host, port) != (pc.host, pc.port) or not isinstance(source, str):
        return ConfigError(reason)  # an address given on the command line
    error = ConfigError(reason, file=source, key="portal.listen")
    return with_lines([error], config_text(source), source)[0]


async def start_portal(
    config: Any,
    *,
    host: str | None = None,
    port: int | None = None,
    store: EventStore | None = None,
) -> PortalServer:
    """Start the web app of ``config`` (its ``[portal]`` table) and return once it listens.

    ``host``/``port`` override ``portal.listen`` (``port=0`` picks a free port).
    Serves HTTPS when ``tls_cert`` and ``tls_key`` are set.
    """
    pc = portal_config(config)
    host = host or pc.host
    port = pc.port if port is None else port
    store = store or event_store(pc.database)
    await store.open()
    tokens = auth_store(store)
    try:
        await import_token_file(tokens, legacy_token_path(config))
    except TokenError as exc:  # the file stays; its tokens do not work until it is fixed
        log.error("%s", exc)
    except BaseException:
        await store.close()
        raise
    journal_path = getattr(getattr(config, "journal", None), "path", None)
    recorder = AccessRecorder(
        daemon_journal(journal_path) if journal_path else None, tokens, pc.session_ttl
    )
    state = PortalState(
        config=config,
        portal=pc,
        store=store,
        tokens=tokens,
        recorder=recorder,
        templates=template_environment(),
        streams=StreamAdmin(config, pc, stream_store(store), recorder),
    )
    runner = web.AppRunner(build_app(state, host), access_log=None)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=_ssl_context(pc))
        try:
            await site.start()
        except OSError as exc:  # the address taken, not one of this host's
            raise _cannot_listen(config, pc, host, port, exc) from None
    except BaseException:
        await runner.cleanup()
        await store.close()
        raise
    bound_port = runner.addresses[0][1] if runner.addresses else port
    if not pc.tls and not is_loopback(host):
        log.warning("portal listens on %s without TLS: set portal.tls_cert and portal.tls_key", host)
    url_host = f"[{host}]" if ":" in host else host
    url = f"{'https' if pc.tls else 'http'}://{url_host}:{bound_port}"
    log.info("audit log portal at %s", url)
    return PortalServer(runner, state, url)
