"""A sink behind on a segment that was rotated away and deleted (logrotate's delete of an
old segment) loses none of its lines when a reload or a crash restarts it: the daemon
still holds the segment open (the shared pass, or the sink's own reader) and hands the
descriptor to the driver that replaces it, which cannot open the deleted file by name."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.deleted_segments import (
    crash_on,
    delete_a_segment_only_the_pass_reads,
    fast_has,
    segment_key,
    two_sinks_config,
)
from tests.helpers.sinks import file_sink

from auditshipd.delivery.driver import SinkDriver
from auditshipd.service import sink_restarts
from auditshipd.testing import WebhookReceiver, read_jsonl_ids, write_events

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("how", ["reload", "crash", "reload, start fails once",
                                 "reload of [journal]"])
@pytest.mark.parametrize("answer", ["hang", 503])
def test_a_restarted_sink_keeps_its_lines_in_a_deleted_segment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer, how: str) -> None:
    """``hang``: the sink's batch is in flight, it is still joined to the pass (the pass
    keeps the segment for it); ``503``: it retries and reads alone (its reader holds it).
    Its driver is then replaced by a reload that changes it, or after a crash (a bug);
    or by a reload whose new driver fails to start once (its state dir refusing a file)
    and is started again later: what it was handed waits for the next one. A reload
    that changes [journal] only retunes the running pass and readers: nothing is lost."""
    journal = tmp_path / "journal" / "audit.jsonl"
    config = tmp_path / "auditshipd.toml"
    crash = asyncio.Event()
    monkeypatch.setattr(sink_restarts, "FIRST_DELAY", 0.2)
    crash_on(monkeypatch, crash)
    start, fail_start = SinkDriver.start, asyncio.Event()

    async def failing_start(self: SinkDriver) -> None:
        if fail_start.is_set() and self.name == "web":
            fail_start.clear()
            raise PermissionError("cursors/web.json: permission denied")
        await start(self)

    monkeypatch.setattr(SinkDriver, "start", failing_start)

    async def scenario(rx: WebhookReceiver) -> None:
        async with running_daemon(config) as d:
            first = write_events(journal, "a", 300)
            await until(lambda: set(first) <= set(read_jsonl_ids(tmp_path / "fast.jsonl")),
                        "the other sink has the first segment")
            rotated = journal.with_name("audit.jsonl.1")
            os.rename(journal, rotated)
            key = segment_key(rotated)
            second = write_events(journal, "b", 20)
            await until(lambda: set(second) <= set(read_jsonl_ids(tmp_path / "fast.jsonl")),
                        "the other sink has the new file")
            rotated.unlink()
            assert d.core is not None and d.core.shared.reader is not None
            await until(lambda: key not in d.core.shared.reader.segments,
                        "the pass let the deleted segment go")
            assert set(first) - set(rx.ids()), "the sink was meant to be behind"
            if how == "reload of [journal]":  # the running pass and readers take it
                core, driver = d.core, d.drivers["web"]
                config.write_text(two_sinks_config(tmp_path, rx, max_events=50,
                                                   read_block_bytes=65536))
                assert await d.reload()
                assert d.core is core and d.drivers["web"] is driver
                assert d.config.journal.read_block_bytes == 65536
            elif how.startswith("reload"):
                if how != "reload":
                    fail_start.set()
                config.write_text(two_sinks_config(tmp_path, rx, max_events=40))
                assert await d.reload()
            else:  # its batches in flight finish (or not) before it restarts
                old = d.drivers["web"]
                crash.set()
            rx.set_script([], default=200)
            await until(lambda: set(first + second) <= set(rx.ids()),
                        "the restarted sink delivers every event", timeout=30)
            if how == "crash":
                await until(lambda: d.drivers.get("web") not in (None, old), "web restarted")
            await until(lambda: not d.core.shared.kept and not d.leftovers,
                        "the deleted segment is let go once no sink needs it")

    with WebhookReceiver() as rx:
        rx.set_script([], default=answer)
        config.write_text(two_sinks_config(tmp_path, rx, max_events=50))
        asyncio.run(scenario(rx))


def _deleted_journal_fds(journal_dir: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(journal_dir)) and target.endswith("(deleted)"):
                out.append(target)
    return out


def test_reloads_of_a_caught_up_sink_let_deleted_segments_go(tmp_path: Path) -> None:
    """Segments rotated away and deleted while the sinks keep up, a reload changing a
    sink after each: once every sink is past them no descriptor holds them (their disk
    space is freed), and no segment is sent twice."""
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True)
    config = tmp_path / "auditshipd.toml"

    def write(cycle: int) -> None:
        config.write_text(f"""
shutdown_timeout = 2.0
config_watch = false
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{tmp_path / 'state'}"
poll_interval = 0.1
rotate_wait = 0.2
[metrics]
enabled = false
""" + file_sink(tmp_path / "a.jsonl", "a", batch=f"timeout = 0.05\nmax_events = {50 + cycle}")
            + file_sink(tmp_path / "b.jsonl", "b", batch="timeout = 0.05"))

    def delivered(name: str, ids: list[str]) -> bool:
        return set(ids) <= set(read_jsonl_ids(tmp_path / f"{name}.jsonl"))

    ids: list[str] = []

    def caught_up() -> bool:
        return delivered("a", ids) and delivered("b", ids)

    async def scenario() -> None:
        async with running_daemon(config) as d:
            for cycle in range(5):
                ids.extend(write_events(journal, f"c{cycle}", 50))
                await until(caught_up, "both sinks")
                rotated = journal.with_name(f"audit.jsonl.{cycle}")
                os.rename(journal, rotated)
                ids.extend(write_events(journal, f"d{cycle}", 5))
                await until(caught_up, "the new file")
                rotated.unlink()
                write(cycle + 1)
                assert await d.reload()
            await until(lambda: not _deleted_journal_fds(journal.parent),
                        "no descriptor holds a deleted segment")
            assert not d.leftovers and all(not x.inherit for x in d.drivers.values())
        for name in ("a", "b"):
            got = [i for i in read_jsonl_ids(tmp_path / f"{name}.jsonl") if i[0] in "cd"]
            assert sorted(got) == sorted(ids), name  # each event once (and the reloads' own)

    write(0)
    asyncio.run(scenario())


def test_a_segment_deleted_while_a_crashed_sink_waits_for_its_restart_reaches_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sink that crashed waits seconds for its restart: a segment the pass reads
    meanwhile, rotated away and deleted, is kept for it (its driver handed the pass a box
    for what it lets go until the next driver of the sink takes it), not lost because no
    sink the pass knew needed it."""
    journal = tmp_path / "journal" / "audit.jsonl"
    config = tmp_path / "auditshipd.toml"
    crash = asyncio.Event()
    monkeypatch.setattr(sink_restarts, "FIRST_DELAY", 3.0)
    crash_on(monkeypatch, crash)

    async def scenario(rx: WebhookReceiver) -> None:
        async with running_daemon(config) as d:
            ids = write_events(journal, "a", 50)
            await until(lambda: fast_has(tmp_path, ids) and set(ids) <= set(rx.ids()),
                        "both sinks have the first segment")
            old = d.drivers["web"]
            crash.set()
            await until(lambda: d.drivers.get("web") is not old, "the crashed sink is down")
            ids += (await delete_a_segment_only_the_pass_reads(d, tmp_path, 20, 1))[1]
            assert "web" not in d.drivers, "it restarted before the segment was let go"
            await until(lambda: "web" in d.drivers, "the sink restarted", timeout=20)
            await until(lambda: set(ids) <= set(rx.ids()),
                        "the restarted sink delivers every event", timeout=10)

    with WebhookReceiver() as rx:
        rx.set_script([], default=200)
        config.write_text(two_sinks_config(tmp_path, rx, max_events=1000))
        asyncio.run(scenario(rx))
