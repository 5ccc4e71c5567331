"""A sink whose driver dies of an unexpected error (a bug) restarts alone after a delay;
the daemon and the other sinks go on, and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from auditshipd.delivery.driver import SinkDriver
from auditshipd.journal.writer import AuditJournal
from auditshipd.service import sink_restarts
from auditshipd.service.daemon import Daemon
from auditshipd.testing import read_jsonl_ids


def test_a_crashed_sink_restarts_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir()
    (tmp_path / "auditshipd.toml").write_text(f"""
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{tmp_path / 'state'}"

[[sinks]]
name = "a"
type = "file"
path = "{tmp_path / 'a.jsonl'}"

[[sinks]]
name = "b"
type = "file"
path = "{tmp_path / 'b.jsonl'}"
""")
    ids = [f"ev-{i}" for i in range(300)]
    with AuditJournal(journal) as j:
        for eid in ids[:100]:
            assert j.record("user.updated", id=eid, actor={"type": "user", "email": "a@b.test"})
    monkeypatch.setattr(sink_restarts, "FIRST_DELAY", 0.2)
    follow = SinkDriver._follow
    crashes: list[str] = []

    async def crashing_once(self: SinkDriver) -> None:
        if self.name == "a" and not crashes:
            inner = asyncio.ensure_future(follow(self))
            while self.committed.acked_events < 100:  # dies after its first deliveries
                await asyncio.sleep(0.02)
            inner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await inner
            crashes.append(self.name)
            raise RuntimeError("a bug in the core")
        await follow(self)

    monkeypatch.setattr(SinkDriver, "_follow", crashing_once)

    async def scenario() -> None:
        d = Daemon(tmp_path / "auditshipd.toml")
        task = asyncio.create_task(d.serve())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not crashes:
            assert loop.time() < deadline, "sink a crashed"
            await asyncio.sleep(0.02)
        with AuditJournal(journal) as j:
            for eid in ids[100:]:
                assert j.record("user.updated", id=eid, actor={"type": "user", "email": "a@b.test"})
        while len(set(read_jsonl_ids(tmp_path / "a.jsonl"))) < 300 or len(read_jsonl_ids(tmp_path / "b.jsonl")) < 300:
            assert not task.done(), "the daemon keeps running"
            assert loop.time() < deadline, "both sinks delivered everything"
            await asyncio.sleep(0.05)
        assert "a" in d.drivers and not task.done()
        d.should_exit.set()
        assert await asyncio.wait_for(task, 30) == 0

    asyncio.run(scenario())
    assert crashes == ["a"]
    assert set(read_jsonl_ids(tmp_path / "a.jsonl")) == set(ids)
    assert read_jsonl_ids(tmp_path / "b.jsonl") == ids
    assert "sink a failed: RuntimeError: a bug in the core; restarting it in 0s" in caplog.text
    status = json.loads((tmp_path / "state" / "status" / "a.json").read_bytes())
    assert status["state"] != "error"  # the restarted driver wrote its own


def test_a_crash_with_a_batch_retrying_for_ever_restarts_after_the_shutdown_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The crashed driver gives its in-flight batch ``shutdown_timeout`` seconds, then
    cancels it: the sink restarts while its receiver still refuses, and the cancelled
    batch is read again and delivered once the receiver accepts."""
    from auditshipd.errors import RetryableError
    from auditshipd.sinks.file import FileSink

    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir()
    (tmp_path / "auditshipd.toml").write_text(f"""
shutdown_timeout = 1.0
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{tmp_path / 'state'}"

[[sinks]]
name = "a"
type = "file"
path = "{tmp_path / 'a.jsonl'}"
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.1
max_attempts = 0
""")
    ids = [f"ev-{i}" for i in range(50)]
    with AuditJournal(journal) as j:
        for eid in ids:
            assert j.record("user.updated", id=eid, actor={"type": "user", "email": "a@b.test"})
    monkeypatch.setattr(sink_restarts, "FIRST_DELAY", 0.2)
    refusing = [True]
    send = FileSink.send

    async def refused_while_asked(self, batch):  # type: ignore[no-untyped-def]
        if refusing[0]:
            raise RetryableError("receiver busy")
        await send(self, batch)

    monkeypatch.setattr(FileSink, "send", refused_while_asked)
    follow = SinkDriver._follow
    crashed: list[SinkDriver] = []

    async def crashing_once(self: SinkDriver) -> None:
        if crashed:
            return await follow(self)
        inner = asyncio.ensure_future(follow(self))
        while self.stats.retries < 2:  # a batch in flight, retrying
            await asyncio.sleep(0.02)
        inner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await inner
        crashed.append(self)
        raise RuntimeError("a bug in the core")

    monkeypatch.setattr(SinkDriver, "_follow", crashing_once)

    async def scenario() -> None:
        d = Daemon(tmp_path / "auditshipd.toml")
        task = asyncio.create_task(d.serve())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not crashed or d.drivers.get("a") in (None, crashed[0]):
            assert loop.time() < deadline, "the sink restarted while its batch still retried"
            assert not task.done()
            await asyncio.sleep(0.02)
        assert refusing[0] and not read_jsonl_ids(tmp_path / "a.jsonl")
        refusing[0] = False
        while set(read_jsonl_ids(tmp_path / "a.jsonl")) != set(ids):
            assert loop.time() < deadline + 15, "everything delivered after the restart"
            await asyncio.sleep(0.05)
        d.should_exit.set()
        assert await asyncio.wait_for(task, 30) == 0

    asyncio.run(scenario())
