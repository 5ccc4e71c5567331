"""One saver for every sink's cursor and status file.

Each sink's committed cursor stays its own durable file, but the saving is coalesced:
a sink whose cursor moved is marked dirty, and one task saves every dirty cursor in one
round (write temp, fsync, rename each, then one fsync of the directory) in one worker
thread. Rounds follow each other as fast as the commits come (so a crash re-sends at most
the batches acknowledged during one round), spaced a little more when many sinks are
dirty at once. Status files are rewritten when what they say changed (at most once a
second, less often with hundreds of sinks); the heartbeat file, rewritten every second,
tells ``auditshipd status`` that the daemon, so its sinks, still run.
Sinks joined to the shared pass that have had nothing in scope for a while get the
pass's position committed (:meth:`~auditshipd.delivery.fanout.SharedPass.commit_idle`),
so a restart does not re-read what they never needed. No timer or task per sink.

A failure (ENOSPC, EIO, a read-only remount) never ends the saver: it is reported in the
sinks' status and the save is retried with backoff until it succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..journal.cursor import CursorState, CursorStore
from .status import Heartbeat

if TYPE_CHECKING:
    from .fanout import SharedPass
    from .outbox import Outbox

__all__ = ["CommitSaver"]

_MAX_BACKOFF = 5.0
# Seconds between heartbeats and status checks (with many sinks, status files that
# changed are rewritten at most every _STATUS_PER_SINK x sinks seconds), and between
# commits of the pass's position for idle joined sinks.
_STATUS_EVERY = 1.0
_STATUS_PER_SINK = 0.005
_IDLE_COMMIT_EVERY = 5.0
# A round that saved many cursors waits this long per cursor before the next one (at
# most a second): a thousand sinks do not each fsync after every batch.
_GAP_PER_CURSOR = 0.001


class CommitSaver:
    def __init__(self, state_dir: str | Path, shared: SharedPass | None = None) -> None:
        self.cursors = CursorStore(state_dir)
        self.heartbeat = Heartbeat(Path(state_dir))
        self.shared = shared
        self.members: dict[str, Outbox] = {}
        self._dirty: dict[str, Outbox] = {}
        self._wake = asyncio.Event()
        self._failures = 0
        # Told that the state dir failed, not yet that it recovered: every one of them is
        # told at the first round that writes, whatever that round writes.
        self._failed: dict[str, Outbox] = {}

    def add(self, member: Outbox) -> None:
        self.members[member.name] = member

        def committed() -> None:
            self._dirty[member.name] = member
            self._wake.set()

        member.on_commit = committed

    def remove(self, member: Outbox) -> None:
        if self.members.get(member.name) is member:
            del self.members[member.name]
        if self._dirty.get(member.name) is member:
            del self._dirty[member.name]
        if self._failed.get(member.name) is member:
            del self._failed[member.name]

    async def run(self) -> None:
        last_status = last_idle = last_beat = time.monotonic()
        while True:
            if self._failures:
                await asyncio.sleep(min(_MAX_BACKOFF, 0.5 * 2 ** min(self._failures - 1, 8)))
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _STATUS_EVERY)
            self._wake.clear()
            now = time.monotonic()
            if self.shared is not None and now - last_idle >= _IDLE_COMMIT_EVERY:
                last_idle = now
                for member in self.shared.commit_idle():
                    self._dirty[member.name] = member
            status: list[Outbox] = []
            if now - last_status >= max(_STATUS_EVERY, _STATUS_PER_SINK * len(self.members)):
                last_status = now
                status = list(self.members.values())
            beat = now - last_beat >= _STATUS_EVERY
            if beat:
                last_beat = now
            saved = await self.save_round(status, beat=beat)
            if saved > 1:
                await asyncio.sleep(min(1.0, saved * _GAP_PER_CURSOR))

    async def save_round(self, status: list[Outbox], *, beat: bool = True) -> int:
        """Save every dirty cursor and the status files of ``status`` that changed (and
        with ``beat`` the heartbeat); return how many cursors were saved."""
        dirty, self._dirty = self._dirty, {}
        snapshots = [(m, m.cursor_snapshot()) for m in dirty.values()]
        for m in dirty.values():
            m.dirty = False
        for m in status:
            m.sync_stats()
        if not snapshots and not status and not beat:
            return 0  # nothing written: it says nothing about whether the state dir takes writes
        try:
            await asyncio.to_thread(self._save, [s for _m, s in snapshots], status, beat)
        except Exception as exc:
            self._failures += 1
            for m, _s in snapshots:
                self._dirty.setdefault(m.name, m)
                m.dirty = True
            for m in {*dirty.values(), *status}:
                m.status.persist_failed(exc, self._failures)
                self._failed[m.name] = m
            return 0
        if self._failures:
            for m in self._failed.values():
                m.status.persist_recovered(self._failures)
            self._failed.clear()
            self._failures = 0
        return len(snapshots)

    def _save(self, states: list[CursorState], status: list[Outbox], beat: bool) -> None:
        self.cursors.save_many(states)
        for m in status:
            m.status.write_if_changed()
        if beat:
            self.heartbeat.beat()

    async def flush(self) -> None:
        """Save what is dirty now (at shutdown)."""
        await self.save_round(list(self.members.values()))
