"""A sink reading alone beside the shared pass, stuck while its destination answers 503,
loses none of a segment the pass read meanwhile and that was rotated away and deleted
before the sink's reader ever looked at the journal again: the pass hands it over as it
lets it go."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink

from auditshipd.testing import WebhookReceiver, read_jsonl_ids, write_events

pytestmark = pytest.mark.integration


def _key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def test_a_sink_stuck_alone_gets_a_segment_deleted_before_its_reader_saw_it(
        tmp_path: Path) -> None:
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir()
    config = tmp_path / "auditshipd.toml"

    async def scenario(rx: WebhookReceiver) -> None:
        async with running_daemon(config) as d:
            assert d.shared is not None and d.shared.reader is not None

            def fast_has(ids: list[str]) -> bool:
                return set(ids) <= set(read_jsonl_ids(tmp_path / "fast.jsonl"))

            ids = write_events(journal, "a", 300)
            await until(lambda: fast_has(ids), "the other sink has the first lines")
            ids += write_events(journal, "e", 100)  # the retrying sink cannot take these
            await until(lambda: fast_has(ids), "the other sink has the first segment")
            web, first, size = d.drivers["web"], _key(journal), journal.stat().st_size
            await until(lambda: web._reader is not None and first in web._reader.segments
                        and web._reader.segments[first].offset == size,
                        "the sink read the first segment alone (then waits for a slot)")
            os.rename(journal, journal.with_name("audit.jsonl.1"))
            second = write_events(journal, "b", 217)
            gone = _key(journal)
            await until(lambda: fast_has(second), "the other sink has the new segment")
            os.rename(journal, journal.with_name("audit.jsonl.2"))
            os.unlink(journal.with_name("audit.jsonl.2"))
            ids += second + write_events(journal, "c", 5)
            await until(lambda: gone not in d.shared.reader.segments, "the pass let it go")
            ids += write_events(journal, "d", 1)  # the other sink's cursor moves past it
            await until(lambda: fast_has(ids) and not d.shared.kept,
                        "no sink the pass knows needs the deleted segment")
            assert gone not in web._reader.segments
            rx.set_script([], default=200)
            await until(lambda: set(ids) <= set(rx.ids()),
                        "the stuck sink delivers every event", timeout=30)

    with WebhookReceiver() as rx:
        rx.set_script([], default=503)
        config.write_text(f"""
shutdown_timeout = 2.0
config_watch = false

[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{tmp_path / 'state'}"
poll_interval = 0.1
rotate_wait = 0.3

[metrics]
enabled = false

[[sinks]]
name = "web"
type = "http"
url = "{rx.url}"
[sinks.batch]
max_events = 50
timeout = 0.05
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.2
attempt_timeout = 1.0
max_attempts = 0
""" + file_sink(tmp_path / "fast.jsonl", "fast", batch="timeout = 0.05"))
        asyncio.run(scenario(rx))
