"""What the daemon tests of rotated and deleted segments share: the config (a retrying
http sink ``web`` behind a quick file sink ``fast``), a segment's key, a driver crash on
demand, and a segment that is rotated away and deleted while only the pass reads it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from tests.helpers.daemon_in_process import until
from tests.helpers.sinks import file_sink

from auditshipd.delivery.driver import SinkDriver
from auditshipd.service.daemon import Daemon
from auditshipd.testing import WebhookReceiver, read_jsonl_ids, write_events


def two_sinks_config(root: Path, rx: WebhookReceiver, max_events: int,
                     read_block_bytes: int = 1024 * 1024) -> str:
    """``web`` (http to ``rx``, retrying for ever) and ``fast`` (file), journal under
    ``root/journal`` (created)."""
    journal = root / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    return f"""
shutdown_timeout = 2.0
config_watch = false

[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{root / 'state'}"
poll_interval = 0.1
rotate_wait = 0.3
read_block_bytes = {read_block_bytes}

[metrics]
enabled = false

[[sinks]]
name = "web"
type = "http"
url = "{rx.url}"
[sinks.batch]
max_events = {max_events}
timeout = 0.05
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.2
attempt_timeout = 1.0
max_attempts = 0
""" + file_sink(root / "fast.jsonl", "fast", batch="timeout = 0.05")


def segment_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def crash_on(monkeypatch: pytest.MonkeyPatch, crash: asyncio.Event, name: str = "web") -> None:
    """Sink ``name``'s driver fails (a bug in the core) once ``crash`` is set; the event is
    cleared, so its restarted driver runs on."""
    follow = SinkDriver._follow

    async def crashing(self: SinkDriver) -> None:
        inner = asyncio.ensure_future(follow(self))
        told = asyncio.ensure_future(crash.wait())
        await asyncio.wait({inner, told}, return_when=asyncio.FIRST_COMPLETED)
        told.cancel()
        if not (crash.is_set() and self.name == name):
            return await inner
        crash.clear()
        inner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await inner
        raise RuntimeError("a bug in the core")

    monkeypatch.setattr(SinkDriver, "_follow", crashing)


def fast_has(root: Path, ids: list[str]) -> bool:
    """Whether the ``fast`` sink wrote every one of ``ids``."""
    return set(ids) <= set(read_jsonl_ids(root / "fast.jsonl"))


async def delete_a_segment_only_the_pass_reads(d: Daemon, root: Path, events: int,
                                               after: int) -> tuple[str, list[str]]:
    """Rotate the journal away, write ``events`` events to the new file and, once ``fast``
    has them, rotate and delete it, write ``after`` more; then wait until the pass let the
    deleted segment go and, one more event later, no sink the pass knows needs it. Returns
    the deleted segment's key and the ids written."""
    journal = root / "journal" / "audit.jsonl"
    assert d.core is not None and d.core.shared.reader is not None
    os.rename(journal, journal.with_name("audit.jsonl.1"))
    ids = write_events(journal, "b", events)
    gone = segment_key(journal)
    await until(lambda: fast_has(root, ids), "the other sink has the new segment")
    os.rename(journal, journal.with_name("audit.jsonl.2"))
    os.unlink(journal.with_name("audit.jsonl.2"))
    ids += write_events(journal, "c", after)
    await until(lambda: gone not in d.core.shared.reader.segments, "the pass let it go")
    ids += write_events(journal, "d", 1)  # the other sink's cursor moves past it
    await until(lambda: fast_has(root, ids) and not d.core.shared.kept,
                "no sink the pass knows needs the deleted segment")
    return gone, ids
