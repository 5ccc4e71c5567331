"""A reload that changes ``[journal]`` takes effect without a restart: the running
watcher, shared pass and readers take the new globs and tunables, losing nothing
written before, during or after it; a file the globs no longer match is drained like a
rotated segment. Only moving ``state_dir`` still needs a restart."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from pathlib import Path

import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink

from auditshipd.journal.writer import AuditJournal
from auditshipd.testing import WebhookReceiver, free_port, read_jsonl_ids, write_events

pytestmark = pytest.mark.integration


def _config(root: Path, journal: Path, sinks: str, journal_extra: str = "",
            paths: list[Path] | None = None, rotate_wait: float = 5.0) -> str:
    globs = json.dumps([f"{p}*" for p in (paths or [journal])])
    return f"""
shutdown_timeout = 3.0
config_watch = false

[journal]
path = "{journal}"
paths = {globs}
state_dir = "{root / 'state'}"
poll_interval = 0.2
rotate_wait = {rotate_wait}
{journal_extra}

{sinks}
"""


def _http_sink(url: str) -> str:
    return f"""
[[sinks]]
name = "web"
type = "http"
url = "{url}"
[sinks.batch]
max_events = 50
timeout = 0.05
"""


def test_a_new_journal_path_is_read_after_a_reload_and_the_old_one_drains(
        tmp_path: Path) -> None:
    """The journal moves to another directory: events appended to the old file until
    the reload (read or not yet) and to the new one after it all reach the sink, the
    old file drained as a rotated segment is; after ``rotate_wait`` it is let go."""
    old, new = tmp_path / "a" / "audit.jsonl", tmp_path / "b" / "audit.jsonl"
    old.parent.mkdir()
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    sinks = file_sink(out, "archive", batch="timeout = 0.05") + f"""
[portal]
enabled = true
listen = "127.0.0.1:{free_port()}"
database = "{tmp_path / 'portal.sqlite3'}"
"""
    config.write_text(_config(tmp_path, old, sinks))

    async def scenario() -> None:
        async with running_daemon(config) as d:
            assert d.servers.portal.state.recorder.journal.path == old
            first = write_events(old, "a", 300)
            await until(lambda: set(first) <= set(read_jsonl_ids(out)), "the old journal read")
            tail = write_events(old, "t", 200)  # maybe unread when the reload comes
            config.write_text(_config(tmp_path, new, sinks, rotate_wait=0.3))
            core = d.core
            assert await d.reload()
            assert d.core is core and d.core.shared.reader.patterns == [f"{new}*"]
            assert d.config.journal.path == str(new)
            assert new.parent.is_dir()  # the daemon made the new journal's directory
            # the portal's own audit events (access, stream changes) go to the new file
            assert d.servers.portal.state.recorder.journal.path == new
            # and the reload itself is one of them, there
            (reload,) = [json.loads(line) for line in new.read_text().splitlines()]
            assert reload["action"] == "log_stream.updated"
            assert reload["metadata"]["journal_changed"] is True
            second = write_events(new, "b", 300)
            await until(lambda: set(first + tail + second) <= set(read_jsonl_ids(out)),
                        "both journals read")
            reader = d.core.shared.reader
            await until(lambda: all(s.path != str(old) for s in reader.segments.values()),
                        "the old file let go after rotate_wait")
            write_events(old, "x", 50)  # no longer in paths: not read
            third = write_events(new, "c", 100)
            await until(lambda: set(third) <= set(read_jsonl_ids(out)), "the new journal read")
            assert not any(i.startswith("x-") for i in read_jsonl_ids(out))
            assert sorted(read_jsonl_ids(out)) == sorted(set(read_jsonl_ids(out)))  # once each

    asyncio.run(scenario())


def test_events_written_while_journal_settings_change_are_all_delivered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A writer appends without pause while three reloads change [journal] tunables and
    the watcher (polling at last): every event arrives, each once, and the replaced
    watcher leaves no task behind (asyncio logs those it destroys)."""
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir()
    config = tmp_path / "auditshipd.toml"
    tunables = ["", "read_block_bytes = 4096", "pass_memory_bytes = 1048576\nmax_line_bytes = 65536",
                "force_polling = true"]
    with WebhookReceiver() as rx:
        out = tmp_path / "out.jsonl"
        sinks = _http_sink(rx.url) + file_sink(out, "archive", batch="timeout = 0.05")
        config.write_text(_config(tmp_path, journal, sinks, tunables[0]))
        written: list[str] = []
        stop = threading.Event()

        def writer() -> None:
            with AuditJournal(journal) as j:
                n = 0
                while not stop.is_set() or n < 3000:
                    eid = f"w-{n:06d}"
                    assert j.record("user.invited", id=eid, actor={"type": "user",
                                                                   "email": "a@acme.test"})
                    written.append(eid)
                    n += 1
                    if n % 100 == 0:
                        stop.wait(0.01)

        async def scenario() -> None:
            async with running_daemon(config) as d:
                thread = threading.Thread(target=writer)
                thread.start()
                try:
                    for extra in tunables[1:]:
                        await until(lambda: len(written) > 500, "the writer started")
                        config.write_text(_config(tmp_path, journal, sinks, extra))
                        assert await d.reload()
                        await asyncio.sleep(0.2)  # let some events through between reloads
                finally:
                    stop.set()
                    await asyncio.to_thread(thread.join)
                await until(lambda: set(written) <= set(rx.ids()), "every event at web",
                            timeout=60)
                await until(lambda: set(written) <= set(read_jsonl_ids(out)),
                            "every event in the archive", timeout=60)
                mine = [i for i in rx.ids() if i.startswith("w-")]  # not the reload records
                assert len(mine) == len(set(mine)) == len(written)  # each once
                assert d.config.journal.force_polling
                assert d.core is not None and d.core.watcher.mode.startswith("poll")
                gc.collect()

        asyncio.run(scenario())
    assert "Task was destroyed but it is pending" not in caplog.text


def test_a_lower_max_line_bytes_applies_to_the_next_lines(tmp_path: Path) -> None:
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir()
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    sinks = file_sink(out, "archive", batch="timeout = 0.05")
    config.write_text(_config(tmp_path, journal, sinks))
    quarantine = tmp_path / "state" / "quarantine" / "archive.jsonl"

    def big(eid: str) -> None:
        with AuditJournal(journal) as j:
            assert j.record("user.invited", id=eid, actor={"type": "user", "email": "a@acme.test"},
                            metadata={"note": "n" * 3000})

    async def scenario() -> None:
        async with running_daemon(config) as d:
            big("big-1")
            await until(lambda: "big-1" in read_jsonl_ids(out), "a 3 kB line delivered")
            config.write_text(_config(tmp_path, journal, sinks, "max_line_bytes = 2048"))
            assert await d.reload()
            big("big-2")
            small = write_events(journal, "s", 3)
            await until(lambda: set(small) <= set(read_jsonl_ids(out)), "the next lines read")
            assert "big-2" not in read_jsonl_ids(out)
            assert quarantine.exists() and "max_line_bytes" in quarantine.read_text()

    asyncio.run(scenario())


def test_a_new_read_block_bytes_applies_to_the_running_readers(tmp_path: Path) -> None:
    """The pass's reader and a sink's own reader take the new block size at the reload
    (each by its own rule: the pass reads at least 4 MiB, a sink catching up alone at
    most 256 kB), and the events written after it still arrive."""
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir()
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    sinks = file_sink(out, "archive", batch="timeout = 0.05")
    config.write_text(_config(tmp_path, journal, sinks))

    async def scenario() -> None:
        async with running_daemon(config) as d:
            assert d.core is not None
            first = write_events(journal, "a", 5)
            await until(lambda: set(first) <= set(read_jsonl_ids(out)), "the first events")
            driver = d.drivers["archive"]
            pass_reader = d.core.shared.reader
            assert pass_reader.block_bytes == 4 << 20
            config.write_text(_config(tmp_path, journal, sinks, "read_block_bytes = 16777216"))
            assert await d.reload()
            assert d.drivers["archive"] is driver and d.core.shared.reader is pass_reader
            assert pass_reader.block_bytes == 16 << 20
            assert driver.reader_block(d.config.journal) == 256 * 1024
            config.write_text(_config(tmp_path, journal, sinks, "read_block_bytes = 65536"))
            assert await d.reload()
            assert pass_reader.block_bytes == 4 << 20
            assert driver.reader_block(d.config.journal) == 65536
            later = write_events(journal, "b", 5)
            await until(lambda: set(later) <= set(read_jsonl_ids(out)), "the events after")

    asyncio.run(scenario())
