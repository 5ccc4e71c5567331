"""delivery.recovery.Health: failures put a sink in error; the first success after them
logs one recovery line with the count and the time, and marks the error resolved."""

from __future__ import annotations

import logging

import pytest

from auditshipd.delivery.recovery import Health
from auditshipd.delivery.status import SinkStats


def test_recovery_logs_once_with_attempts_and_time(caplog: pytest.LogCaptureFixture) -> None:
    """Three failures over 4.5 s (fake clock), then two successes: one info line
    "sink s recovered after 3 failed attempts / 4.5s"; state active; the error kept as
    history with last_error_resolved_at; a new failure makes it current again."""
    now = [100.0]
    stats = SinkStats(sink="s", type="http", state="active")
    health = Health("s", stats, logging.getLogger("test.recovery"), ["tok-1"],
                    clock=lambda: now[0])
    for delay in (0.0, 1.5, 3.0):
        now[0] += delay
        health.error("attempt failed with token tok-1")
    assert stats.state == "error" and stats.last_error_resolved_at is None
    assert "tok-1" not in (stats.last_error or "")
    with caplog.at_level(logging.INFO, logger="test.recovery"):
        health.success(10)
        health.success(5)
    lines = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert lines == ["sink s recovered after 3 failed attempts / 4.5s"]
    assert stats.state == "active" and stats.delivered == 15
    assert stats.last_error and stats.last_error_resolved_at
    health.error("again")
    assert stats.state == "error" and stats.last_error_resolved_at is None


def test_a_start_after_failed_starts_is_a_recovery(caplog: pytest.LogCaptureFixture) -> None:
    """A sink that failed to start once and then started logs "after 1 failed attempt"."""
    stats = SinkStats(sink="s", type="mqtt")
    health = Health("s", stats, logging.getLogger("test.recovery"), clock=lambda: 7.0)
    health.error("start failed (attempt 1): broker unreachable")
    with caplog.at_level(logging.INFO, logger="test.recovery"):
        health.started()
    assert [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()] == [
        "sink s recovered after 1 failed attempt / 0.0s"]
    assert stats.state == "active" and stats.last_error_resolved_at
