"""A sink reading alone beside the shared pass, stuck while its destination answers 503,
loses none of a segment that left the glob before the sink's reader looked at the journal
again: one the pass read meanwhile, rotated away and deleted (the pass hands it over as it
lets it go), or the active file copytruncated and written again, then renamed away (the
reader still holds it open at the offset it had read to before the truncation)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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


def _stuck_alone(tmp_path: Path, then: Callable[[Any, Any, Path, list[str]], Awaitable[None]]
                 ) -> None:
    """Sink ``web`` answers 503 and reads the journal alone to its end (then waits for a
    slot) while ``fast`` has it all; ``then(daemon, web, journal, ids)`` changes the
    journal (adding its new ids); once ``web``'s destination answers again, it delivers
    every event."""
    journal = tmp_path / "journal" / "audit.jsonl"
    config = tmp_path / "auditshipd.toml"

    async def scenario(rx: WebhookReceiver) -> None:
        async with running_daemon(config) as d:
            ids = write_events(journal, "a", 300)
            await until(lambda: fast_has(tmp_path, ids), "the other sink has the first lines")
            ids += write_events(journal, "e", 100)  # the retrying sink cannot take these
            await until(lambda: fast_has(tmp_path, ids), "the other sink has the file")
            web, key, size = d.drivers["web"], segment_key(journal), journal.stat().st_size
            await until(lambda: web.own_reader is not None and key in web.own_reader.segments
                        and web.own_reader.segments[key].offset == size,
                        "the sink read the file alone (then waits for a slot)")
            await then(d, web, journal, ids)
            rx.set_script([], default=200)
            await until(lambda: set(ids) <= set(rx.ids()),
                        "the stuck sink delivers every event", timeout=30)

    with WebhookReceiver() as rx:
        rx.set_script([], default=503)
        config.write_text(two_sinks_config(tmp_path, rx, max_events=50))
        asyncio.run(scenario(rx))


def test_a_sink_stuck_alone_gets_a_segment_deleted_before_its_reader_saw_it(
        tmp_path: Path) -> None:
    async def then(d: Any, web: Any, journal: Path, ids: list[str]) -> None:
        gone, more = await delete_a_segment_only_the_pass_reads(d, tmp_path, 217, 5)
        ids += more
        assert gone not in web.own_reader.segments

    _stuck_alone(tmp_path, then)


def test_a_sink_stuck_alone_gets_a_copytruncated_file_that_left_the_glob(
        tmp_path: Path) -> None:
    async def then(d: Any, web: Any, journal: Path, ids: list[str]) -> None:
        shutil.copyfile(journal, journal.with_name("audit.jsonl.1"))  # copytruncate
        os.truncate(journal, 0)
        ids += write_events(journal, "b", 50)  # fewer bytes than the sink's offset
        await until(lambda: fast_has(tmp_path, ids), "the other sink has the new lines")
        os.rename(journal, tmp_path / "archived.jsonl")  # out of the glob
        ids += write_events(journal, "c", 5)
        await until(lambda: fast_has(tmp_path, ids), "the other sink has the new file")

    _stuck_alone(tmp_path, then)
