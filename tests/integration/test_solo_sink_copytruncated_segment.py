"""A sink reading alone beside the shared pass, stuck while its destination answers 503,
gets the lines written to the active file after a copytruncate, when that file then leaves
the glob (renamed away) before the sink's reader looks at the journal again: the reader
still holds the file open at the offset it had read to before the truncation."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.deleted_segments import fast_has, segment_key, two_sinks_config

from auditshipd.testing import WebhookReceiver, write_events

pytestmark = pytest.mark.integration


def test_a_sink_stuck_alone_gets_a_copytruncated_file_that_left_the_glob(
        tmp_path: Path) -> None:
    journal = tmp_path / "journal" / "audit.jsonl"
    config = tmp_path / "auditshipd.toml"

    async def scenario(rx: WebhookReceiver) -> None:
        async with running_daemon(config) as d:
            ids = write_events(journal, "a", 300)
            await until(lambda: fast_has(tmp_path, ids), "the other sink has the first lines")
            ids += write_events(journal, "e", 100)  # the retrying sink cannot take these
            await until(lambda: fast_has(tmp_path, ids), "the other sink has the file")
            web, key, size = d.drivers["web"], segment_key(journal), journal.stat().st_size
            await until(lambda: web._reader is not None and key in web._reader.segments
                        and web._reader.segments[key].offset == size,
                        "the sink read the file alone (then waits for a slot)")
            shutil.copyfile(journal, journal.with_name("audit.jsonl.1"))  # copytruncate
            os.truncate(journal, 0)
            ids += write_events(journal, "b", 50)  # fewer bytes than the sink's offset
            await until(lambda: fast_has(tmp_path, ids), "the other sink has the new lines")
            os.rename(journal, tmp_path / "archived.jsonl")  # out of the glob
            ids += write_events(journal, "c", 5)
            await until(lambda: fast_has(tmp_path, ids), "the other sink has the new file")
            rx.set_script([], default=200)
            await until(lambda: set(ids) <= set(rx.ids()),
                        "the stuck sink delivers every event", timeout=5)

    with WebhookReceiver() as rx:
        rx.set_script([], default=503)
        config.write_text(two_sinks_config(tmp_path, rx, max_events=50))
        asyncio.run(scenario(rx))
