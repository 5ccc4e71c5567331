"""The metrics endpoints of a real daemon: /readyz names a sink that cannot start; the
counters and the latency histogram go on across a reload that replaces a sink's driver
or restarts the metrics server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink

from auditshipd.testing import free_port, read_jsonl_ids, write_events

pytestmark = pytest.mark.integration


def _config(root: Path, tables: str, metrics: str) -> str:
    journal = root / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True, exist_ok=True)
    return f"""
shutdown_timeout = 3.0
config_watch = false
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{root / 'state'}"
poll_interval = 0.2

[metrics]
{metrics}
{tables}
"""


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return answer.status, await answer.text()


def test_readyz_names_a_sink_whose_start_fails(tmp_path: Path) -> None:
    port = free_port()
    blocked = tmp_path / "out" / "dir.jsonl"
    blocked.mkdir(parents=True)  # the file sink cannot open a directory: start() fails
    config = tmp_path / "auditshipd.toml"
    config.write_text(_config(
        tmp_path, file_sink(tmp_path / "out" / "good.jsonl", "good") + file_sink(blocked, "bad"),
        f'listen = "127.0.0.1:{port}"'))

    async def scenario() -> None:
        async with running_daemon(config) as d:
            await until(lambda: d.drivers["good"].stats.state == "active", "the good sink started")
            await until(lambda: d.drivers["bad"].stats.last_error, "the bad sink's start failed")
            status, body = await _get(f"http://127.0.0.1:{port}/readyz")
            assert status == 503, body
            assert '"bad": "not started; last error: start failed' in body
            assert '"good"' not in body
            assert d.drivers["good"].started and not d.drivers["bad"].started

    asyncio.run(scenario())


def _sample(text: str, name: str, sink: str) -> float:
    m = re.search(rf'^{name}\{{sink="{sink}"(?:,le="\+Inf")?\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else -1.0


def test_counters_and_histogram_survive_reloads(tmp_path: Path) -> None:
    port = free_port()
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    listen = f'listen = "127.0.0.1:{port}"'
    sink = file_sink(out, "f", batch="timeout = 0.05")
    config.write_text(_config(tmp_path, sink, listen))
    journal = tmp_path / "journal" / "audit.jsonl"
    names = ("auditshipd_events_read_total", "auditshipd_events_delivered_total",
             "auditshipd_batch_latency_seconds_count")

    async def scrape() -> dict[str, float]:
        _status, text = await _get(f"http://127.0.0.1:{port}/metrics")
        return {n: _sample(text, n, "f") for n in names}

    async def scenario() -> None:
        async with running_daemon(config) as d:
            ids = write_events(journal, "a", 5)
            await until(lambda: set(ids) <= set(read_jsonl_ids(out)), "first delivery")
            await until(lambda: d.drivers["f"].stats.delivered >= 5, "acknowledged")
            before = await scrape()
            assert before["auditshipd_events_delivered_total"] >= 5
            assert before["auditshipd_batch_latency_seconds_count"] >= 1
            # The sink changes: its driver is replaced.
            config.write_text(_config(tmp_path, file_sink(out, "f", "fsync = false",
                                                          batch="timeout = 0.05"), listen))
            assert await d.reload()
            after_sink = await scrape()
            for n in names:
                assert after_sink[n] >= before[n], (n, before, after_sink)
            # [metrics] changes: the server restarts.
            config.write_text(_config(tmp_path, file_sink(out, "f", "fsync = false",
                                                          batch="timeout = 0.05"),
                                      listen + "\nready_stuck_after = 100.0"))
            assert await d.reload()
            after_server = await scrape()
            for n in names:
                assert after_server[n] >= after_sink[n], (n, after_sink, after_server)
            more = write_events(journal, "b", 3)
            await until(lambda: set(more) <= set(read_jsonl_ids(out)), "delivery after reloads")
            final = await scrape()
            assert final["auditshipd_events_delivered_total"] >= \
                after_server["auditshipd_events_delivered_total"] + 3

    asyncio.run(scenario())


def test_a_removed_sink_leaves_metrics_and_counts_from_zero_when_added_again(
        tmp_path: Path) -> None:
    port = free_port()
    config, journal = tmp_path / "auditshipd.toml", tmp_path / "journal" / "audit.jsonl"
    listen = f'listen = "127.0.0.1:{port}"'
    keep = file_sink(tmp_path / "keep.jsonl", "keep", batch="timeout = 0.05")
    gone_out = tmp_path / "gone.jsonl"
    gone = file_sink(gone_out, "gone", batch="timeout = 0.05")
    config.write_text(_config(tmp_path, keep + gone, listen))

    async def text() -> str:
        return (await _get(f"http://127.0.0.1:{port}/metrics"))[1]

    async def scenario() -> None:
        async with running_daemon(config) as d:
            ids = write_events(journal, "a", 5)
            await until(lambda: set(ids) <= set(read_jsonl_ids(gone_out)), "first delivery")
            # the file is written before the batch is acknowledged: wait for the counts
            await until(lambda: d.drivers["gone"].stats.delivered >= 5
                        and d.drivers["keep"].stats.delivered >= 5, "both acknowledged")
            first = await text()
            assert _sample(first, "auditshipd_events_delivered_total", "gone") >= 5
            assert _sample(first, "auditshipd_batch_latency_seconds_count", "gone") >= 1
            config.write_text(_config(tmp_path, keep, listen))
            assert await d.reload()
            removed = await text()
            assert 'sink="gone"' not in removed
            assert _sample(removed, "auditshipd_events_delivered_total", "keep") >= 5
            # Added again (its cursor kept): its counters start over, as a new series.
            config.write_text(_config(tmp_path, keep + gone, listen))
            assert await d.reload()
            again = await text()
            assert _sample(again, "auditshipd_events_delivered_total", "gone") == 0
            assert _sample(again, "auditshipd_batch_latency_seconds_count", "gone") == -1.0

    asyncio.run(scenario())
