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


def test_zero_total_does_not_divide_by_zero():
    """A total of 0 (nothing to replay) draws a full bar without error."""
    tty = FakeTTY()
    with Progress(0, "empty", stream=tty) as bar:
        bar.advance(0)
    assert "] 0/0" in tty.getvalue()


def test_silent_when_not_a_tty():
    """Piped or redirected output gets no bar at all, not even the final newline."""
    stream = io.StringIO()
    with Progress(3, "x", stream=stream) as bar:
        for _ in range(3):
            bar.advance()
    assert stream.getvalue() == ""
    assert bar.done == 3
