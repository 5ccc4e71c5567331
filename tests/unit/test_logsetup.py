"""Log output: JSON off a TTY, text on one, and rate-limited repeats (fake clock)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from auditshipd.service.logs import RepeatLimiter, setup_logging


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in saved:
            h.close()
    root.handlers[:], root.level = saved, level


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in stream.getvalue().splitlines()]


def test_json_when_not_a_tty(restore_root):
    """A non-TTY stream gets one JSON object per line with ts, level, logger, msg."""
    out = io.StringIO()
    setup_logging("info", stream=out, timers=False)
    logging.getLogger("auditshipd.x").info("started %d sinks", 3)
    [doc] = lines(out)
    assert doc["level"] == "info" and doc["logger"] == "auditshipd.x"
    assert doc["msg"] == "started 3 sinks" and doc["ts"].endswith("+00:00")


def test_text_on_a_tty(restore_root):
    """A TTY gets readable lines, not JSON."""
    out = TTY()
    setup_logging("info", stream=out, timers=False)
    logging.getLogger("auditshipd.x").warning("sink %s is slow", "siem")
    text = out.getvalue()
    assert "WARNING" in text and "auditshipd.x: sink siem is slow" in text
    assert not text.startswith("{")


def test_repeats_suppressed_and_summarised_when_window_closes(restore_root):
    """1,000 warnings in a minute: 10 written, then one summary with the count."""
    out, clock = io.StringIO(), Clock()
    setup_logging("info", stream=out, clock=clock, timers=False)
    log = logging.getLogger("auditshipd.sink.siem")
    for i in range(1000):
        log.warning("%s: attempt %d failed: %s", "siem", i, "connection refused")
        clock.now += 0.05
    docs = lines(out)
    assert len(docs) == 10
    assert docs[-1]["msg"] == "siem: attempt 9 failed: connection refused"
    clock.now = 100.0 + 61
    logging.getLogger("auditshipd").info("something else")  # any line closes the window
    docs = lines(out)
    assert len(docs) == 12
    summary = docs[10]
    assert summary["level"] == "warning" and summary["logger"] == "auditshipd.sink.siem"
    assert summary["repeated"] == 990
    assert summary["msg"] == ("siem: attempt 999 failed: connection refused"
                              " (repeated 990 more times in the last 60s)")
    assert docs[11]["msg"] == "something else"


def test_next_allowed_line_emits_the_summary_first(restore_root):
    """After the window, the same message is allowed again, preceded by the summary."""
    out, clock = io.StringIO(), Clock()
    setup_logging("info", stream=out, clock=clock, timers=False, repeat_limit=2,
                  repeat_window=10)
    log = logging.getLogger("auditshipd.sink.a")
    for _ in range(5):
        log.error("down: %s", "HTTP 503")
    clock.now += 10
    log.error("down: %s", "HTTP 500")
    msgs = [d["msg"] for d in lines(out)]
    assert msgs == ["down: HTTP 503", "down: HTTP 503",
                    "down: HTTP 503 (repeated 3 more times in the last 10s)",
                    "down: HTTP 500"]


def test_info_and_other_templates_are_not_limited(restore_root):
    """INFO lines and different templates or loggers are counted separately or not at all."""
    out, clock = io.StringIO(), Clock()
    setup_logging("info", stream=out, clock=clock, timers=False, repeat_limit=2)
    for _ in range(5):
        logging.getLogger("a").info("progress %d", 1)
        logging.getLogger("a").warning("one %s", "x")
        logging.getLogger("a").warning("two %s", "x")
        logging.getLogger("b").warning("one %s", "x")
    msgs = [d["msg"] for d in lines(out)]
    assert msgs.count("progress 1") == 5
    assert len(msgs) == 5 + 2 * 3


def test_summary_written_at_close(restore_root):
    """Shutting logging down writes the summary of what is still held back."""
    out, clock = io.StringIO(), Clock()
    handler = setup_logging("info", stream=out, clock=clock, timers=False, repeat_limit=1)
    log = logging.getLogger("auditshipd.sink.a")
    for _ in range(4):
        log.warning("retrying")
    handler.close()
    msgs = [d["msg"] for d in lines(out)]
    assert msgs == ["retrying", "retrying (repeated 3 more times in the last 60s)"]


def test_single_repeat_wording():
    """One held-back line says 'time', not 'times'; the limiter works on its own."""
    clock = Clock()
    lim = RepeatLimiter(limit=1, window=5, clock=clock)
    rec = logging.makeLogRecord({"name": "x", "levelno": logging.WARNING,
                                 "levelname": "WARNING", "msg": "boom"})
    assert lim.process(rec) == [rec]
    assert lim.process(rec) == []
    clock.now += 5
    [summary] = lim.expired()
    assert summary.getMessage() == "boom (repeated 1 more time in the last 5s)"
    assert lim.expired() == []


def test_key_table_is_bounded():
    """Many distinct templates never grow the table past max_keys."""
    lim = RepeatLimiter(limit=1, window=60, clock=Clock(), max_keys=50)
    for i in range(500):
        lim.process(logging.makeLogRecord({"name": "x", "levelno": logging.ERROR,
                                           "levelname": "ERROR", "msg": f"m{i}"}))
    assert len(lim._windows) <= 50


def test_timer_flushes_summary_without_further_lines(restore_root):
    """With timers on, the summary appears when the window closes even if nothing else logs."""
    from auditshipd.testing import wait_for

    out = io.StringIO()
    setup_logging("info", stream=out, repeat_limit=1, repeat_window=0.2)
    log = logging.getLogger("auditshipd.sink.t")
    for _ in range(3):
        log.warning("refused")
    wait_for(lambda: "repeated 2 more times" in out.getvalue(), 5, message="summary")
