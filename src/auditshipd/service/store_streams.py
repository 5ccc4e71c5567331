"""Self-service streams from the portal's store, as sinks of this daemon.

Another source of organization-scoped sinks besides the stream files: the definitions an
organization's admin saves in the portal (SQLite or PostgreSQL). Every daemon that shares
the store runs them, each shipping its own journal's events of that organization, from
the stream's creation on (``start_at`` is the creation time, so a daemon that picks a
stream up late ships the same events).

The daemon looks at the store's change counter every ``[portal] stream_poll_interval``
seconds (and on SIGHUP); when it moved, the config is reloaded with the new definitions,
and the usual difference applies (new streams start, changed ones restart from their
cursor, deleted or paused ones stop, their cursor kept). A definition that cannot run
(secrets that do not decrypt, a destination now refused, a name a stream file uses
too) is left out and reported on the portal with its reason; the others run. Without a
secrets key no self-service stream starts, and the daemon says so; the rest of it runs.

Each daemon reports the state of its streams into the store, one row per stream and host
(``hostname#<state dir hash>``, so two daemons of one machine are told apart).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import socket
import time
from pathlib import Path
from typing import Any

from ..config import Config, SinkConfig
from ..netguard import BlockedDestination, DestinationPolicy, check_literal, destination_host
from ..plugin import SinkType
from ..portal.backend import event_store, is_postgres_url, stream_store
from ..portal.config import portal_config
from ..portal.pg_errors import describe
from ..portal.stream_defs import StreamRequestError, check_definition, destination_url
from ..portal.stream_secrets import SecretsKeyError, load_secret_box
from ..portal.stream_store import StreamStatus, StreamStore, status_fresh_for
from ..scrub import scrub_secrets, sink_secrets
from .status import sink_status

__all__ = ["STORE_TIMEOUT", "StoreStreams", "check_store_streams", "host_id", "readable_store",
           "store_stream_sink"]

log = logging.getLogger("auditshipd")
SOURCE = "portal"
# Journal bytes read per stream to count its lag when reporting (estimated beyond).
LAG_BUDGET = 256 * 1024
# Streams whose state is read and reported at every poll; more space the reports out.
REPORT_BATCH = 50
# A host that has not reported a stream's state for this long (seconds) is forgotten:
# taken out of the fleet, or an instance an autoscaler replaced. Looked for hourly.
FORGET_HOST_AFTER = 7 * 86400
FORGET_EVERY = 3600
# Seconds a command (status, check-config) gives the store to list its streams: a
# server down must not hang it.
STORE_TIMEOUT = 5.0


def host_id(config: Config) -> str:
    digest = hashlib.sha256(str(config.state_dir.resolve()).encode()).hexdigest()[:6]
    return f"{socket.gethostname()}#{digest}"


def wanted(config: Config) -> bool:
    """Whether this daemon has a portal store to read stream definitions from."""
    return bool(config.portal.enabled or config.portal.database)


def _database(config: Config) -> str | None:
    """The portal store ``config`` names, None when it names none."""
    return portal_config(config).database if wanted(config) else None


def readable_store(config: Config) -> str | None:
    """The portal store a command (status, check-config) may open to read streams: None
    when ``config`` names none, or an SQLite file not there yet (opening it would create
    it)."""
    database = _database(config)
    if database is None or not (is_postgres_url(database) or Path(database).exists()):
        return None
    return database


class StoreStreams:
    """The self-service streams of one daemon: read, turned into sinks, reported."""

    def __init__(self) -> None:
        self.streams: StreamStore | None = None
        self._events: Any = None
        self._database: str | None = None  # what the open store was opened on
        self.revision: int | None = None
        self.ids: dict[str, str] = {}  # sink name -> stream id
        self.errors: dict[str, str] = {}  # stream id -> why it does not run here
        self.names: dict[str, str] = {}  # stream id -> sink name, every definition read
        self._said: str | None = None
        self._next_report = 0.0
        self._next_forget = 0.0
        self._signalled: int | None = None  # the last revision changed() reported
        self.unavailable = False  # the last sink_configs() could not read the store

    async def open(self, config: Config) -> bool:
        """Open the store of ``config`` (False when there is none or it cannot be read:
        logged, and tried again at the next look). A config that names another store than
        the open one (``[portal] database`` changed, or the portal taken out) closes it
        first: the streams are then those of the new store, without a restart."""
        database = _database(config)
        if self.streams is not None:
            if database == self._database:
                return True
            await self.close()
        if database is None:
            return False
        try:
            events = event_store(database)
            await events.open()
        except Exception as exc:
            self._say(f"self-service streams unavailable: the portal store cannot be opened:"
                      f" {scrub_secrets(describe(exc))}")
            return False
        self._events, self.streams = events, stream_store(events)
        self._database = database
        return True

    async def close(self) -> None:
        events, self._events, self.streams = self._events, None, None
        # Another store's revisions say nothing about this one's.
        self._database = self.revision = self._signalled = None
        if events is not None:
            await events.close()

    def _say(self, message: str) -> None:
        if message != self._said:  # once per distinct problem, not every few seconds
            log.error("%s", message)
            self._said = message

    @property
    def problem(self) -> str | None:
        """What keeps every self-service stream from running here (the store cannot be
        read, no secrets key), None when nothing does."""
        return self._said

    async def sink_configs(self, config: Config, types: dict[str, SinkType]) -> list[SinkConfig]:
        """The sinks of the runnable, unpaused definitions (errors kept per stream).
        ``unavailable`` says afterwards whether the store ``config`` names could not be
        opened or read (an empty list then says nothing about its streams)."""
        self.unavailable = False
        if not await self.open(config):
            self.unavailable = _database(config) is not None
            return []
        assert self.streams is not None
        try:
            revision = await self.streams.revision()  # read before: a change after re-reads
            defs = await self.streams.list()
        except Exception as exc:
            self._say(f"self-service streams: the portal store cannot be read:"
                      f" {scrub_secrets(describe(exc))}")
            self.unavailable = True
            # Unknown now: the first revision read once the store answers again reloads.
            self.revision = self._signalled = None
            return []
        self.revision = revision
        self.ids, self.errors = {}, {}
        self.names = {d.id: d.sink_name for d in defs}
        self._next_report = 0.0  # report the new set at the next poll
        if not defs:
            return []
        pc = portal_config(config)
        try:
            box = load_secret_box(pc.secrets_key_file)
        except SecretsKeyError as exc:
            self._say(f"self-service streams not started on this host: {exc}")
            self.errors = {d.id: f"not running on this host: {exc}" for d in defs if not d.paused}
            return []
        self._said = None
        # Decrypting and validating a thousand definitions takes a fraction of a second
        # of CPU: off the event loop, so the running sinks are not held up.
        return await asyncio.to_thread(self._build, config, types, defs, box,
                                       DestinationPolicy.parse(pc.stream_allow_hosts))

    def _build(self, config: Config, types: dict[str, SinkType], defs: list[Any], box: Any,
               policy: DestinationPolicy) -> list[SinkConfig]:
        taken = {s.name for s in config.sinks}
        out = []
        for d in defs:
            if d.paused:
                continue
            try:
                if d.sink_name in taken:
                    raise StreamRequestError(f"a sink named {d.sink_name!r} is configured by the"
                                             " operator too: rename one of them")
                options = {**d.options, **box.open(d.id, d.sealed)}
                sc = check_definition(d.organization, d.name, d.type, options, types,
                                      since=d.created_at)
                where = destination_host(destination_url(d.type, options))
                if where is not None:
                    check_literal(where[0], policy)
            except (StreamRequestError, SecretsKeyError, BlockedDestination) as exc:
                reason = exc.message if isinstance(exc, StreamRequestError) else str(exc)
                log.error("self-service stream %s not started: %s", d.sink_name, reason)
                self.errors[d.id] = reason
                continue
            sc.source = SOURCE
            sc.destinations = policy
            self.ids[sc.name] = d.id
            out.append(sc)
        return out

    async def changed(self, config: Config) -> bool:
        """Whether a definition changed since the last :meth:`sink_configs` (or the
        store, unavailable then, can now be opened). Each new change is said once: a
        reload refused for another reason (an invalid config file) is not retried at
        every poll, the next edit or SIGHUP tries again."""
        if self.streams is None or self._moved(config):
            return await self.open(config)
        try:
            revision = await self.streams.revision()
        except Exception as exc:
            self._say(f"self-service streams: the portal store cannot be read:"
                      f" {scrub_secrets(describe(exc))}")
            return False
        if revision in (self.revision, self._signalled):
            return False
        self._signalled = revision
        return True

    def _moved(self, config: Config) -> bool:
        """Whether ``config`` names another store than the open one."""
        return _database(config) != self._database

    async def report(self, config: Config, host: str) -> None:
        """Write this host's view of each stream into the store. Reading the state of a
        stream costs a look at its files (lag), so with many streams the reports space
        out: every poll up to REPORT_BATCH streams, proportionally less often beyond, but
        twice within the time the portal counts a report current, so that a host with
        many streams never shows them inactive between its reports."""
        if self.streams is None or self._moved(config) or not (self.ids or self.errors):
            return
        now = time.monotonic()
        if now < self._next_report:
            return
        poll = config.portal.stream_poll_interval
        spacing = max(1.0, len(self.ids) / REPORT_BATCH)
        # the next report comes at the first poll past this gap: at most half the window
        gap = min(poll * (spacing - 1), status_fresh_for(poll) / 2 - poll)
        self._next_report = now + max(0.0, gap)
        mine = {s.name: s for s in config.sinks if s.name in self.ids}
        rows = await asyncio.to_thread(
            sink_status, dataclasses.replace(config, sinks=list(mine.values())),
            budget=LAG_BUDGET) if mine else []
        now = time.time()
        out = []
        for r in rows:
            name, state = str(r["name"]), str(r.get("state") or "inactive")
            error = r.get("last_error") if state in ("error", "blocked") else None
            out.append(StreamStatus(self.ids[name], host, state, r.get("last_synced_at"),
                                    scrub_secrets(error, sink_secrets(mine[name])),
                                    r.get("lag_events"), r.get("lag_bytes"), now))
        out += [StreamStatus(i, host, "error", None, reason, None, None, now)
                for i, reason in self.errors.items()]
        try:
            await self.streams.report(host, out)
            if time.monotonic() >= self._next_forget:
                self._next_forget = time.monotonic() + FORGET_EVERY
                gone = await self.streams.forget_hosts(now - FORGET_HOST_AFTER)
                if gone:
                    log.info("self-service streams: forgot %d state(s) of hosts silent for"
                             " %d days", gone, FORGET_HOST_AFTER // 86400)
        except Exception as exc:
            log.warning("self-service streams: cannot report their state: %s",
                        scrub_secrets(str(exc)))



async def _read_once(config: Config, types: dict[str, SinkType]
                     ) -> tuple[StoreStreams, list[SinkConfig]]:
    """The store's streams read, decrypted and validated once, as the daemon would start
    them (each one that would not run logged with its reason); TimeoutError when the
    store gives no answer within STORE_TIMEOUT."""
    streams = StoreStreams()
    try:
        sinks = await asyncio.wait_for(streams.sink_configs(config, types), STORE_TIMEOUT)
    finally:
        await streams.close()
    return streams, sinks


async def store_stream_sink(config: Config, types: dict[str, SinkType], name: str
                            ) -> tuple[SinkConfig | None, str]:
    """For ``dlq replay``: the self-service stream whose sink is named ``name``, as the
    daemon would run it (secrets decrypted, its destination policy attached), or None
    and why it cannot be sent to from this host."""
    missing = f"no sink named {name!r}"
    if readable_store(config) is None:
        return None, missing
    try:
        streams, sinks = await _read_once(config, types)
    except TimeoutError:
        return None, (f"{missing} in the config, and the portal store gave no answer"
                      f" within {STORE_TIMEOUT:g} s")
    found = next((sc for sc in sinks if sc.name == name), None)
    if found is not None:
        return found, ""
    for stream_id, sink_name in streams.names.items():
        if sink_name == name:
            why = streams.errors.get(stream_id, "it is paused in the portal")
            return None, f"self-service stream {name!r} cannot be sent to from this host: {why}"
    if streams.problem:
        return None, (f"{missing} in the config, and the portal store's streams cannot be"
                      " read (the reason is logged above)")
    return None, missing


async def check_store_streams(config: Config, types: dict[str, SinkType]
                              ) -> tuple[list[SinkConfig], str | None]:
    """For ``check-config``: the self-service streams this host would run (read,
    decrypted and validated as the daemon does; each one that would not run is logged
    with its reason), and one line saying how many of each kind there are, or None when
    the config names no store or its SQLite file does not exist yet (it is not created)."""
    if readable_store(config) is None:
        return [], None
    try:
        streams, sinks = await _read_once(config, types)
    except TimeoutError:
        return [], (f"self-service streams not checked: the portal store gave no answer"
                    f" within {STORE_TIMEOUT:g} s")
    if streams.problem and not streams.names:
        return [], "portal store: self-service streams not checked (the reason is logged above)"
    if not streams.names:
        return [], "portal store: no self-service streams"
    paused = len(streams.names) - len(sinks) - len(streams.errors)
    running = ", ".join(f"{s.name} ({s.type})" for s in sinks)
    line = (f"portal store: {len(streams.names)} self-service stream(s): {len(sinks)} would"
            f" run here{': ' + running if running else ''}")
    if streams.errors:
        line += (f"; {len(streams.errors)} would not ("
                 f"{', '.join(sorted(streams.names[i] for i in streams.errors))}: reasons above)")
    if paused:
        line += f"; {paused} paused"
    return sinks, line
