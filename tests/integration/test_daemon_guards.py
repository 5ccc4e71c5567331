"""What the daemon guards against at start and on a reload: a second daemon on the same
state dir (both would deliver every event), and a plugin whose ``config_loaded`` hook
raises (a notification: the daemon runs on, the reload is applied whole)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers.daemon_in_process import running_daemon, until
from tests.helpers.sinks import file_sink
from tests.integration.test_reload_refusals import _config

from auditshipd.testing import read_jsonl_ids, write_events

pytestmark = pytest.mark.integration

RAISING_HOOK = '''
from auditshipd.plugin import hookimpl


@hookimpl
def config_loaded(config):
    raise RuntimeError("a plugin bug in config_loaded")
'''


def _run(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "auditshipd.cli", "run", "-c", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(cond, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)


def test_a_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    config.write_text(_config(tmp_path, file_sink(out, "out", batch="timeout = 0.05")))
    lock = tmp_path / "state" / "daemon.lock"
    first = _run(config)
    try:
        _wait(lambda: lock.exists() and lock.read_text().strip() == str(first.pid),
              "the first daemon holds the state dir")
        second = _run(config)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        assert f"another running auditshipd (pid {first.pid})" in err
        assert "journal.state_dir" in err and "Traceback" not in err
        assert first.poll() is None
        ids = write_events(tmp_path / "journal" / "audit.jsonl", "a", 20)
        _wait(lambda: set(ids) <= set(read_jsonl_ids(out)), "the first daemon delivers")
        # kill -9: the kernel drops the lock, and a new daemon starts on the state dir
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        third = _run(config)
        try:
            _wait(lambda: lock.read_text().strip() == str(third.pid), "the new daemon runs")
            more = write_events(tmp_path / "journal" / "audit.jsonl", "b", 5)
            _wait(lambda: set(more) <= set(read_jsonl_ids(out)), "the new daemon delivers")
        finally:
            third.terminate()
            third.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert read_jsonl_ids(out).count(ids[0]) <= 2  # at least once, not once per daemon


def test_a_lock_file_that_cannot_be_written_does_not_stop_the_daemon(tmp_path: Path) -> None:
    """The lock is the state dir's own: a daemon.lock it cannot write (here a directory
    in its place; a full or read-only state dir alike) stops nothing, the daemon ships
    (it retries saving what it cannot write), and a second daemon is still refused."""
    out, config = tmp_path / "out.jsonl", tmp_path / "auditshipd.toml"
    config.write_text(_config(tmp_path, file_sink(out, "out", batch="timeout = 0.05")))
    (tmp_path / "state" / "daemon.lock").mkdir(parents=True)
    first = _run(config)
    try:
        ids = write_events(tmp_path / "journal" / "audit.jsonl", "a", 5)
        _wait(lambda: set(ids) <= set(read_jsonl_ids(out)), "the daemon ships")
        second = _run(config)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2 and "another running auditshipd (pid unknown)" in err, err
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(timeout=30)


def test_a_config_loaded_hook_that_raises_stops_neither_start_nor_reload(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "noisy.py").write_text(RAISING_HOOK)
    a, b, config = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "auditshipd.toml"
    top = f'plugin_dirs = ["{plugins}"]'
    config.write_text(_config(tmp_path, file_sink(a, "a", batch="timeout = 0.05"), top=top))
    journal = tmp_path / "journal" / "audit.jsonl"

    async def scenario() -> None:
        async with running_daemon(config) as d:
            config.write_text(_config(tmp_path, file_sink(a, "a", batch="timeout = 0.05")
                                      + file_sink(b, "b", batch="timeout = 0.05"), top=top))
            assert await d.reload()
            assert set(d.drivers) == {"a", "b"}
            ids = write_events(journal, "x", 5)
            await until(lambda: set(ids) <= set(read_jsonl_ids(b)), "the added sink delivers")
            await until(lambda: set(ids) <= set(read_jsonl_ids(a)), "the running sink goes on")

    asyncio.run(scenario())
    failures = [r for r in caplog.records if "plugin hook config_loaded failed" in r.getMessage()]
    assert len(failures) == 2  # at start and at the reload
    assert "a plugin bug in config_loaded" in failures[0].getMessage()
