"""A sink alone in the shared pass whose destination never answers holds no one back: the
pass waits for that sink's room only until another sink joins (or a batch timeout is
due), and for at most ``_STALL`` seconds of a batch in flight; then the sink reads alone
and the pass reads on. A sink added by a reload beside it gets its events long before
the hanging request's ``attempt_timeout``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink

from auditshipd.delivery import fanout
from auditshipd.journal.writer import AuditJournal
from auditshipd.testing import WebhookReceiver, read_jsonl_ids

pytestmark = pytest.mark.integration

# Far longer than any wait below: without the bounded wait, nothing after the hanging
# sink's batches moves for this long.
ATTEMPT_TIMEOUT = 60.0


def _config(root: Path, url: str, extra_sinks: str = "") -> str:
    journal = root / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    return f"""
shutdown_timeout = 1.0
config_watch = false
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{root / 'state'}"
poll_interval = 0.05

[metrics]
enabled = false

[[sinks]]
name = "hang"
type = "http"
url = "{url}"
concurrency = 1
[sinks.batch]
max_events = 5
timeout = 0.05
[sinks.retry]
attempt_timeout = {ATTEMPT_TIMEOUT}
{extra_sinks}
"""


def _events(root: Path, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    with AuditJournal(root / "journal" / "audit.jsonl") as j:
        for eid in ids:
            assert j.record("user.signed_in", id=eid, organization={"slug": "acme"},
                            actor={"type": "user", "email": "jo@acme.test"})
    return ids


def _ours(out: Path) -> list[str]:
    """The test's events in the file sink (a reload records an event of its own)."""
    return [i for i in read_jsonl_ids(out) if i[:2] in ("a-", "b-", "c-")]


async def _hang_blocks_the_pass(d, rcv: WebhookReceiver) -> None:
    """The hanging sink has a request waiting for an answer and more batches queued
    behind it: alone in the pass, it has no room for another chunk."""
    hang = d.drivers["hang"]
    await until(lambda: rcv.requests >= 1 and hang.inflight >= 2, "the hanging sink's batches")
    assert d.core is not None and d.core.shared.members == {hang}


def test_a_sink_joining_beside_a_hanging_lone_sink_gets_its_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass is waiting for the room of its only sink (stuck on a request that never
    gets an answer); a file sink added by a reload catches up alone and joins: the pass
    stops waiting at once and the file sink gets the lines read meanwhile and the ones
    that follow, its partial batches sent on their timeout."""
    # No stall eviction during this test: only the join may end the wait.
    monkeypatch.setattr(fanout, "_STALL", 10 * ATTEMPT_TIMEOUT)
    config, out = tmp_path / "auditshipd.toml", tmp_path / "f.jsonl"
    added = file_sink(out, "f", 'start_at = "beginning"', batch="timeout = 0.05")

    async def scenario() -> None:
        with WebhookReceiver() as rcv:
            rcv.set_script([], default="hang")
            config.write_text(_config(tmp_path, rcv.url))
            async with running_daemon(config) as d:
                first = _events(tmp_path, "a", 30)
                await _hang_blocks_the_pass(d, rcv)
                config.write_text(_config(tmp_path, rcv.url, added))
                assert await d.reload()
                second = _events(tmp_path, "b", 30)
                await until(lambda: _ours(out) == first + second,
                            "the file sink's events", timeout=ATTEMPT_TIMEOUT / 4)
                third = _events(tmp_path, "c", 7)
                await until(lambda: _ours(out) == first + second + third,
                            "the file sink's later events", timeout=ATTEMPT_TIMEOUT / 4)
                assert d.core is not None and d.drivers["f"] in d.core.shared.members

    asyncio.run(scenario())


def test_a_hanging_lone_sink_is_sent_to_read_alone_after_the_stall_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No other sink joins: once the lone sink's oldest batch has been in flight for
    ``_STALL`` seconds the pass sends it to read alone and reads on; a file sink added
    afterwards joins the moving pass and gets everything."""
    monkeypatch.setattr(fanout, "_STALL", 1.0)
    config, out = tmp_path / "auditshipd.toml", tmp_path / "f.jsonl"
    added = file_sink(out, "f", 'start_at = "beginning"', batch="timeout = 0.05")

    async def scenario() -> None:
        with WebhookReceiver() as rcv:
            rcv.set_script([], default="hang")
            config.write_text(_config(tmp_path, rcv.url))
            async with running_daemon(config) as d:
                first = _events(tmp_path, "a", 30)
                await _hang_blocks_the_pass(d, rcv)
                second = _events(tmp_path, "b", 30)
                shared = d.core.shared
                assert shared is not None
                await until(lambda: shared.lines_read >= 60 and not shared.members,
                            "the pass reading on without the hanging sink",
                            timeout=ATTEMPT_TIMEOUT / 4)
                config.write_text(_config(tmp_path, rcv.url, added))
                assert await d.reload()
                third = _events(tmp_path, "c", 7)
                await until(lambda: _ours(out) == first + second + third,
                            "the file sink's events", timeout=ATTEMPT_TIMEOUT / 4)
                # The hanging sink stays apart while its request waits.
                assert d.drivers["hang"] not in shared.members

    asyncio.run(scenario())
