"""``start_at = <time>`` selects a new sink's backfill: the journal's events at or after
that time. Once the backfill is done (the sink is level with the journal's end), and
after any restart with a cursor, every new event counts, whatever its ``occurred_at``:
a late event or a skewed clock is delivered, not filtered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink

from auditshipd.testing import read_jsonl_ids

SINCE = "2026-05-01T02:00:00+02:00"  # 2026-05-01T00:00:00Z


def _write(journal: Path, events: list[tuple[str, str]]) -> None:
    with journal.open("ab") as f:
        for eid, when in events:
            f.write(msgspec.json.encode({"id": eid, "action": "user.invited", "occurred_at": when,
                                         "organization": {"slug": "acme"}}) + b"\n")


def test_start_at_filters_the_backfill_only(tmp_path: Path) -> None:
    journal = tmp_path / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True)
    config = tmp_path / "auditshipd.toml"
    config.write_text(f"""
config_watch = false
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{tmp_path / 'state'}"
poll_interval = 0.05
[metrics]
enabled = false
""" + file_sink(tmp_path / "acme.jsonl", "acme", f'organizations = ["acme"]\nstart_at = "{SINCE}"',
                batch="timeout = 0.05") + file_sink(tmp_path / "all.jsonl", "all", batch="timeout = 0.05"))
    _write(journal, [("old", "2026-04-30T23:59:59Z"), ("at", "2026-05-01T00:00:00Z")])

    def got(name: str) -> list[str]:
        return [i for i in read_jsonl_ids(tmp_path / f"{name}.jsonl") if i.isalpha()]

    async def first_run() -> None:
        async with running_daemon(config):
            await until(lambda: got("all") == ["old", "at"], "the backfill")
            _write(journal, [("late", "2026-04-30T12:00:00Z"), ("new", "2026-05-02T00:00:00Z")])
            await until(lambda: got("all") == ["old", "at", "late", "new"], "the new events")
            await until(lambda: got("acme") == ["at", "late", "new"], "a late event counts")

    async def second_run() -> None:
        async with running_daemon(config):
            _write(journal, [("skewed", "2026-01-01T00:00:00Z")])
            await until(lambda: got("all")[-1:] == ["skewed"], "after a restart")
            await until(lambda: got("acme")[-1:] == ["skewed"], "with a cursor, start_at is done")

    asyncio.run(first_run())
    asyncio.run(second_run())
    assert got("acme") == ["at", "late", "new", "skewed"]
