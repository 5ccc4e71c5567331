"""``start_at = <time>`` selects a new sink's backfill across every segment of the
journal: a rotated segment read first (short, so the shared pass seems to reach an end
after it) does not end the filter, whether the sink is scoped to organizations or not."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink

from auditshipd.testing import read_jsonl_ids

SINCE = "2026-05-01T02:00:00+02:00"  # 2026-05-01T00:00:00Z


def _lines(events: list[tuple[str, str]]) -> bytes:
    return b"".join(msgspec.json.encode({"id": eid, "action": "user.invited", "occurred_at": when,
                                         "organization": {"slug": "acme"}}) + b"\n"
                    for eid, when in events)


def test_the_time_filters_the_whole_backfill_over_rotated_segments(tmp_path: Path) -> None:
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True)
    rotated = journal.with_name("audit.jsonl.1")
    rotated.write_bytes(_lines([(f"older{i}", "2026-04-01T00:00:00Z") for i in range(10)]))
    os.utime(rotated, (1_700_000_000, 1_700_000_000))  # older than the live file
    journal.write_bytes(_lines([(f"old{i}", "2026-04-15T00:00:00Z") for i in range(10)]
                               + [("new", "2026-05-02T00:00:00Z")]))
    config = tmp_path / "auditshipd.toml"
    timed = f'start_at = "{SINCE}"'
    config.write_text(f"""
config_watch = false
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{tmp_path / 'state'}"
poll_interval = 0.05
[metrics]
enabled = false
""" + file_sink(tmp_path / "acme.jsonl", "acme", f'organizations = ["acme"]\n{timed}',
                batch="timeout = 0.05")
        + file_sink(tmp_path / "timed.jsonl", "timed", timed, batch="timeout = 0.05")
        + file_sink(tmp_path / "all.jsonl", "all", batch="timeout = 0.05"))

    def got(name: str) -> list[str]:
        return read_jsonl_ids(tmp_path / f"{name}.jsonl")

    async def scenario() -> None:
        async with running_daemon(config):
            await until(lambda: len(got("all")) == 21, "every event reaches the unscoped sink")
            await until(lambda: got("acme") == ["new"] and got("timed") == ["new"],
                        "the timed sinks get the event at or after their time")

    asyncio.run(scenario())
    assert got("acme") == got("timed") == ["new"]
