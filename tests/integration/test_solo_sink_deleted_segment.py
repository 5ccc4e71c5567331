"""A sink reading alone beside the shared pass, stuck while its destination answers 503,
loses none of a segment the pass read meanwhile and that was rotated away and deleted
before the sink's reader ever looked at the journal again: the pass hands it over as it
lets it go."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.deleted_segments import (
    delete_a_segment_only_the_pass_reads,
    fast_has,
    segment_key,
    two_sinks_config,
)

from auditshipd.testing import WebhookReceiver, write_events

pytestmark = pytest.mark.integration


def test_a_sink_stuck_alone_gets_a_segment_deleted_before_its_reader_saw_it(
        tmp_path: Path) -> None:
    journal = tmp_path / "journal" / "audit.jsonl"
    config = tmp_path / "auditshipd.toml"

    async def scenario(rx: WebhookReceiver) -> None:
        async with running_daemon(config) as d:
            ids = write_events(journal, "a", 300)
            await until(lambda: fast_has(tmp_path, ids), "the other sink has the first lines")
            ids += write_events(journal, "e", 100)  # the retrying sink cannot take these
            await until(lambda: fast_has(tmp_path, ids), "the other sink has the first segment")
            web, first, size = d.drivers["web"], segment_key(journal), journal.stat().st_size
            await until(lambda: web._reader is not None and first in web._reader.segments
                        and web._reader.segments[first].offset == size,
                        "the sink read the first segment alone (then waits for a slot)")
            gone, more = await delete_a_segment_only_the_pass_reads(d, tmp_path, 217, 5)
            ids += more
            assert gone not in web._reader.segments
            rx.set_script([], default=200)
            await until(lambda: set(ids) <= set(rx.ids()),
                        "the stuck sink delivers every event", timeout=30)

    with WebhookReceiver() as rx:
        rx.set_script([], default=503)
        config.write_text(two_sinks_config(tmp_path, rx, max_events=50))
        asyncio.run(scenario(rx))
