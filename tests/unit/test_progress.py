"""The progress bar: drawn on a TTY, silent otherwise."""

from __future__ import annotations

import io

from auditshipd.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_drawn_on_a_tty_and_ends_with_a_newline():
    """On a TTY the bar shows label, fill and done/total, and the last state is complete."""
    tty = FakeTTY()
    with Progress(4, "replaying siem", stream=tty) as bar:
        for _ in range(4):
            bar.advance()
    out = tty.getvalue()
    assert out.startswith("\rreplaying siem [")
    frames = out.rstrip("\n").split("\r")[1:]
    assert frames[-1] == "replaying siem [" + "#" * 30 + "] 4/4"
    assert out.endswith("\n")


def test_advance_by_many_and_partial_fill():
    """advance(n) moves by n; the fill is proportional to done/total."""
    tty = FakeTTY()
    bar = Progress(10, "x", stream=tty)
    bar.advance(5)
    assert tty.getvalue() == "\rx [" + "#" * 15 + " " * 15 + "] 5/10"
    assert bar.done == 5


def test_zero_total_means_unknown_and_shows_the_count():
    """A total of 0 (unknown, e.g. events piped in) shows a running count, no bar, no
    division by zero."""
    tty = FakeTTY()
    with Progress(0, "redacting", stream=tty, unit="bytes") as bar:
        bar.advance(0)
        bar._last = 0.0  # let the next update draw at once
        bar.advance(1234)
    out = tty.getvalue()
    assert "redacting 1234 bytes" in out and "[" not in out


def test_silent_when_not_a_tty():
    """Piped or redirected output gets no bar at all, not even the final newline."""
    stream = io.StringIO()
    with Progress(3, "x", stream=stream) as bar:
        for _ in range(3):
            bar.advance()
    assert stream.getvalue() == ""
    assert bar.done == 3


def test_redact_command_shows_progress_on_a_tty(tmp_path):
    """`auditshipd redact < file > out` draws a byte-progress bar on a TTY stderr while the
    redacted events go, intact, to the redirected stdout."""
    import json
    import os
    import pty
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({
        "id": f"e{i}", "action": "user.invited", "occurred_at": "2026-01-01T00:00:00Z",
        "actor": {"type": "user", "email": "a@acme.test", "id": "user_01HINTERNAL0000000000000"},
    }) + "\n" for i in range(2000)))
    master, slave = pty.openpty()
    with open(src, "rb") as stdin, open(tmp_path / "out.jsonl", "wb") as stdout:
        proc = subprocess.run([sys.executable, "-m", "auditshipd.cli", "redact"], stdin=stdin,
                              stdout=stdout, stderr=slave, timeout=60)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.returncode == 0
    assert b"redacting [" in seen and f"/{src.stat().st_size} bytes".encode() in seen
    out = (tmp_path / "out.jsonl").read_bytes()
    assert out.count(b"\n") == 2000 and b"INTERNAL" not in out
