"""The shared pass as a unit: a real journal file, scripted sinks, the pass, the drivers and
one commit saver run in-process (no daemon). Each line is decoded and redacted once per
policy; each sink gets exactly its organizations' lines; a sink that cannot take lines
reads alone and rejoins; idle sinks get the pass's position committed."""

from __future__ import annotations

import asyncio
import functools
import io
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from auditshipd.config import Config, parse_config
from auditshipd.delivery import commits, fanout
from auditshipd.delivery.batch import Batch
from auditshipd.delivery.commits import CommitSaver
from auditshipd.delivery.driver import SinkDriver
from auditshipd.delivery.fanout import SharedPass
from auditshipd.errors import RetryableError
from auditshipd.journal.cursor import CursorState
from auditshipd.journal.watch import ChangeSignal
from auditshipd.journal.writer import AuditJournal
from auditshipd.redaction.redactor import DEFAULT_POLICY
from auditshipd.service.journal_core import JournalCore
from auditshipd.testing import wait_for_async


class CountingRedactor:
    """The default policy, counting the lines it redacts."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        return DEFAULT_POLICY(event)

    def redact_line(self, line: bytes) -> bytes:
        self.calls += 1
        return DEFAULT_POLICY.redact_line(line)


class ScriptedSink:
    """Accepts every batch unless ``gate`` is set and closed (then waits for it)."""

    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.gate: asyncio.Event | None = None
        self.begun: list[tuple[str, int]] = []  # each send's first id and size, as it began

    def batches(self) -> str:
        """The sends in the order they began (first id x size), for a failure message."""
        return " ".join(f"{first}x{n}" for first, n in self.begun)

    async def start(self) -> None:
        pass

    async def send(self, batch: Batch) -> None:
        self.begun.append((batch.ids[0] if batch.ids else "-", len(batch.ids)))
        if self.gate is not None:
            await self.gate.wait()
        self.accepted += batch.ids

    async def close(self) -> None:
        pass


def write_events(journal: Path, orgs: list[str | None], start: int = 0) -> list[str]:
    ids = []
    with AuditJournal(journal) as j:
        for i, org in enumerate(orgs, start):
            extra: dict[str, Any] = {"organization": {"slug": org}} if org else {}
            assert j.record("user.invited", id=f"e{i}", actor={"type": "user"}, **extra)
            ids.append(f"e{i}")
    return ids


def make_config(tmp_path: Path, sinks: str) -> Config:
    journal = tmp_path / "audit.jsonl"
    return parse_config(f"""
[journal]
path = "{journal}"
paths = ["{journal}*"]
state_dir = "{tmp_path / 'state'}"
force_polling = true
poll_interval = 0.05
{sinks}
""", str(tmp_path / "auditshipd.toml"))


class Harness:
    """The pass, a saver and one driver per configured sink, as the daemon wires them."""

    def __init__(self, config: Config, redactor: Any = DEFAULT_POLICY) -> None:
        self.config = config
        self.redactor = redactor
        self.signal = ChangeSignal()
        self.shared = SharedPass(config, self.signal)
        self.saver = CommitSaver(config.state_dir, self.shared)
        self.sinks: dict[str, ScriptedSink] = {}
        self.drivers: dict[str, SinkDriver] = {}
        self.tasks: list[asyncio.Task[Any]] = []
        self.background: list[asyncio.Task[Any]] = []

    def driver(self, name: str) -> SinkDriver:
        sc = next(s for s in self.config.sinks if s.name == name)
        sink = self.sinks[name] = ScriptedSink()
        d = self.drivers[name] = SinkDriver(self.config, sc, sink, signal=self.signal,
                                            redactor=self.redactor, shared=self.shared,
                                            saver=self.saver)
        return d

    async def start(self) -> None:
        for sc in self.config.sinks:
            await self.driver(sc.name).start()
        self.shared.begin(d.start_point() for d in self.drivers.values())
        self.tasks = [asyncio.create_task(d.run()) for d in self.drivers.values()]
        self.background = [asyncio.create_task(self.shared.run()),
                           asyncio.create_task(self.saver.run())]

    async def add(self, name: str) -> None:
        """A sink added while the pass runs (a live reload)."""
        d = self.driver(name)
        await d.start()
        self.tasks.append(asyncio.create_task(d.run()))

    async def stop(self) -> None:
        for d in self.drivers.values():
            d.stop()
        await _finished(self.tasks, "drivers")
        for t in self.background:
            t.cancel()
        await _finished(self.background, "the pass and the saver", errors=False)


async def _finished(tasks: list[asyncio.Task[Any]], what: str, timeout: float = 10.0,
                    errors: bool = True) -> None:
    """Wait for ``tasks``; a stop that does not end fails within ``timeout`` naming where
    every unfinished task of the loop waits (not after pytest-timeout's minutes, with
    only the threads' stacks); with ``errors``, the first task's exception is raised."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    if pending:
        buf = io.StringIO()
        for task in asyncio.all_tasks():
            if not task.done() and task is not asyncio.current_task():
                task.print_stack(file=buf)
        raise AssertionError(f"{what} did not stop within {timeout} s:\n{buf.getvalue()}")
    for task in tasks if errors else ():
        if task.exception() is not None:
            raise task.exception()


until = functools.partial(wait_for_async, timeout=10.0, interval=0.01)


def sink_table(name: str, extra: str = "") -> str:
    return f"""
[[sinks]]
name = "{name}"
type = "fake"
{extra}
"""


async def first_running(tmp_path: Path, orgs: list[str | None], late: str = "",
                        head: str = "") -> tuple[Harness, Any, list[str]]:
    """Sink "first" running on a pass that delivered it one event per entry of ``orgs``
    (their organizations); sink "late" (``late``: its settings) configured but left out,
    to be added as a reload would (``config.sinks.append``, then ``add`` or ``driver``).
    Returns the harness, late's config and the events' ids."""
    config = make_config(tmp_path, head + sink_table("first") + sink_table("late", late))
    config.sinks, late_sc = config.sinks[:1], config.sinks[1]
    ids = write_events(tmp_path / "audit.jsonl", orgs)
    h = Harness(config)
    await h.start()
    await until(lambda: len(h.sinks["first"].accepted) == len(orgs))
    return h, late_sc, ids


async def test_two_sinks_with_the_default_policy_redact_each_line_once(tmp_path):
    """A file-like and a portal-like sink, both unscoped, same policy: each line is
    redacted once, and both sinks get every event."""
    config = make_config(tmp_path, sink_table("file") + sink_table("portal"))
    ids = write_events(tmp_path / "audit.jsonl", [None] * 300)
    redactor = CountingRedactor()
    h = Harness(config, redactor)
    await h.start()
    await until(lambda: all(len(s.accepted) == 300 for s in h.sinks.values()))
    await h.stop()
    assert redactor.calls == 300
    assert h.sinks["file"].accepted == ids and h.sinks["portal"].accepted == ids


async def test_org_streams_get_exactly_their_organizations_events(tmp_path):
    """Org-scoped sinks (one with two organizations), an unscoped one and one whose
    organization never appears: each gets exactly its events, in journal order; lines
    are redacted once (only the ones some sink needs when all are scoped)."""
    orgs = ["acme", "globex", "initech", None]
    config = make_config(tmp_path, sink_table("acme", 'organizations = ["acme"]')
                         + sink_table("two", 'organizations = ["globex", "initech"]')
                         + sink_table("all")
                         + sink_table("nobody", 'organizations = ["umbrella"]'))
    events = [orgs[i % 4] for i in range(400)]
    ids = write_events(tmp_path / "audit.jsonl", events)
    redactor = CountingRedactor()
    h = Harness(config, redactor)
    await h.start()
    await until(lambda: len(h.sinks["all"].accepted) == 400)
    await until(lambda: len(h.sinks["two"].accepted) == 200)
    await until(lambda: len(h.sinks["acme"].accepted) == 100)
    await h.stop()
    want = {org: [i for i, o in zip(ids, events, strict=True) if o == org] for org in orgs}
    assert h.sinks["acme"].accepted == want["acme"]
    assert h.sinks["two"].accepted == [i for i, o in zip(ids, events, strict=True)
                                       if o in ("globex", "initech")]
    assert h.sinks["all"].accepted == ids
    assert h.sinks["nobody"].accepted == []
    assert redactor.calls == 400


async def test_a_stuck_sink_reads_alone_then_rejoins_while_the_others_go_on(tmp_path):
    """One sink's sends hang: it leaves the pass (it cannot take lines), the other keeps
    receiving everything; once the sink answers again it catches up alone, from its own
    position, and rejoins the pass. Each gets every event exactly once."""
    config = make_config(tmp_path, sink_table("slow", "[sinks.batch]\nmax_events = 10")
                         + sink_table("fast", "[sinks.batch]\nmax_events = 10"))
    journal = tmp_path / "audit.jsonl"
    h = Harness(config)
    await h.start()
    gate = asyncio.Event()
    h.sinks["slow"].gate = gate
    ids = write_events(journal, [None] * 100)
    await until(lambda: not h.drivers["slow"]._joined)
    ids += write_events(journal, [None] * 100, start=100)
    await until(lambda: len(h.sinks["fast"].accepted) == 200)
    assert h.sinks["slow"].accepted == []
    gate.set()
    await until(lambda: len(h.sinks["slow"].accepted) == 200)
    await until(lambda: h.drivers["slow"]._joined)
    ids += write_events(journal, [None] * 50, start=200)
    await until(lambda: len(h.sinks["slow"].accepted) == 250)
    await until(lambda: len(h.sinks["fast"].accepted) == 250)
    await h.stop()
    assert h.sinks["slow"].accepted == ids and h.sinks["fast"].accepted == ids


async def test_a_reload_gives_a_sink_reading_alone_the_new_block_size(tmp_path):
    """A sink added later reads alone to catch up (its sends held); a reload's retune
    sets its reader's block to the new ``read_block_bytes`` (a sink catching up alone
    reads at most 256 kB, the pass at least 4 MiB) between two reads, and every event
    still arrives once."""
    h, late_sc, ids = await first_running(tmp_path, [None] * 100, "[sinks.batch]\nmax_events = 10")
    config, journal = h.config, tmp_path / "audit.jsonl"
    config.sinks.append(late_sc)
    await h.add("late")
    gate = h.sinks["late"].gate = asyncio.Event()  # before its first send
    await until(lambda: h.drivers["late"].own_reader is not None)
    reader = h.drivers["late"].own_reader
    assert reader.block_bytes == 256 * 1024 and h.shared.reader.block_bytes == 4 << 20
    core = JournalCore(config, h.signal, lambda: [])
    core.shared = h.shared  # the core of the harness's pass
    await core.retune(msgspec.structs.replace(config.journal, read_block_bytes=65536),
                      list(h.drivers.values()))
    assert reader.block_bytes == 65536 and h.shared.reader.block_bytes == 4 << 20
    await core.retune(msgspec.structs.replace(config.journal, read_block_bytes=8 << 20),
                      list(h.drivers.values()))
    assert reader.block_bytes == 256 * 1024 and h.shared.reader.block_bytes == 8 << 20
    assert h.drivers["late"].own_reader is reader  # still reading alone
    ids += write_events(journal, [None] * 100, start=100)
    gate.set()
    await until(lambda: all(len(s.accepted) == 200 for s in h.sinks.values()))
    await core.close()
    await h.stop()
    assert h.sinks["late"].accepted == ids and h.sinks["first"].accepted == ids


async def test_a_sink_added_later_backfills_from_the_beginning_then_joins(tmp_path):
    """A sink added while the pass runs (start_at = "beginning", no cursor): it reads the
    journal alone from the start, no further than the pass, then joins it."""
    h, late_sc, ids = await first_running(tmp_path, ["acme", "globex"] * 50, 'organizations = ["acme"]')
    journal = tmp_path / "audit.jsonl"
    h.config.sinks.append(late_sc)
    await h.add("late")
    await until(lambda: len(h.sinks["late"].accepted) == 50)
    await until(lambda: h.drivers["late"]._joined)
    more = write_events(journal, ["acme"] * 10, start=100)
    await until(lambda: len(h.sinks["late"].accepted) == 60)
    await h.stop()
    assert h.sinks["late"].accepted == ids[::2] + more


async def test_an_idle_stream_gets_the_pass_position_committed(tmp_path, monkeypatch):
    """A stream whose organization has no events commits the pass's position anyway
    (on restart it does not read again what it never needed)."""
    # That commit comes every 5 s, looked for once a second: here every 0.1 s.
    monkeypatch.setattr(commits, "_IDLE_COMMIT_EVERY", 0.1)
    monkeypatch.setattr(commits, "_STATUS_EVERY", 0.1)
    config = make_config(tmp_path, sink_table("all") + sink_table("quiet", 'organizations = ["none"]'))
    write_events(tmp_path / "audit.jsonl", ["acme"] * 20)
    h = Harness(config)
    await h.start()
    await until(lambda: len(h.sinks["all"].accepted) == 20)
    size = (tmp_path / "audit.jsonl").stat().st_size
    await until(lambda: [c.offset for c in h.drivers["quiet"].committed.segments.values()]
                == [size], timeout=15)
    await h.stop()
    saved = h.saver.cursors.load("quiet")
    assert [c.offset for c in saved.segments.values()] == [size]


async def test_start_at_end_is_the_end_when_the_daemon_starts_not_when_the_sink_does(tmp_path):
    """A sink at start_at = "end" whose destination takes a while to connect: the lines
    appended after the daemon started (and before the sink did) are delivered, the older
    ones are not."""
    config = make_config(tmp_path, sink_table("late", 'start_at = "end"'))
    journal = tmp_path / "audit.jsonl"
    write_events(journal, [None] * 30)
    h = Harness(config)
    connected = asyncio.Event()
    sink = ScriptedSink()
    sink.start = connected.wait  # type: ignore[method-assign]
    sc = config.sinks[0]
    h.sinks["late"] = sink
    h.drivers["late"] = SinkDriver(config, sc, sink, signal=h.signal, redactor=h.redactor,
                                   shared=h.shared, saver=h.saver)
    await h.drivers["late"].start()
    h.shared.begin(d.start_point() for d in h.drivers.values())
    h.tasks = [asyncio.create_task(h.drivers["late"].run())]
    h.background = [asyncio.create_task(h.shared.run()), asyncio.create_task(h.saver.run())]
    new = write_events(journal, [None] * 10, start=30)  # the daemon has started
    connected.set()
    await until(lambda: len(sink.accepted) == 10)
    await h.stop()
    assert sink.accepted == new


@pytest.mark.parametrize("before", ["stopped at once", "no journal yet", "cursor emptied"])
async def test_start_at_end_applies_once_a_restart_reads_what_was_written_while_down(
        tmp_path, before):
    """start_at = "end" is the end when the sink first started, not at every start: the
    lines written while the daemon was down are delivered after its restart, whether it
    had stopped before reading anything (its cursor saved empty), before the journal
    existed, or after every segment it read left the glob (its cursor emptied again)."""
    config = make_config(tmp_path, "rotate_wait = 0.1\n" + sink_table(
        "only", 'start_at = "end"\n[sinks.batch]\ntimeout = 0.05'))
    journal = tmp_path / "audit.jsonl"
    old = write_events(journal, [None] * 5) if before != "no journal yet" else []
    h = Harness(config)
    await h.start()
    if before == "cursor emptied":
        old += write_events(journal, [None] * 5, start=5)
        await until(lambda: len(h.sinks["only"].accepted) == 5)
        os.rename(journal, tmp_path / "archived")  # out of the glob: let go
        only = h.drivers["only"]
        await until(lambda: not h.shared.reader.segments and not only.committed.segments)
    await h.stop()
    assert (tmp_path / "state" / "cursors" / "only.json").exists()
    down = write_events(journal, [None] * 5, start=10)  # while the daemon is down
    h = Harness(config)
    await h.start()
    up = write_events(journal, [None] * 5, start=15)
    await until(lambda: len(h.sinks["only"].accepted) == 10)
    await h.stop()
    assert h.sinks["only"].accepted == down + up
    assert not set(old) & set(h.sinks["only"].accepted)


async def test_an_empty_cursor_saved_before_starts_were_recorded_still_starts_at_the_end(
        tmp_path):
    """A cursor file with no position that acknowledged nothing and does not say the
    sink started (as saved by earlier versions when a sink at start_at = "end" stopped
    before reading) keeps meaning a fresh sink: the journal is not sent from its start."""
    config = make_config(tmp_path, sink_table("only", 'start_at = "end"'))
    journal = tmp_path / "audit.jsonl"
    write_events(journal, [None] * 5)
    (tmp_path / "state" / "cursors").mkdir(parents=True)
    (tmp_path / "state" / "cursors" / "only.json").write_text(
        '{"version":1,"sink":"only","segments":{},"acked_events":0,"integrity":null}')
    h = Harness(config)
    await h.start()
    new = write_events(journal, [None] * 3, start=5)
    await until(lambda: len(h.sinks["only"].accepted) == 3)
    await h.stop()
    assert h.sinks["only"].accepted == new


@pytest.mark.parametrize("start_at", ["end", "2030-01-01T00:00:00Z"])
async def test_start_at_is_honoured_beside_the_pass(tmp_path, start_at):
    """start_at = "end" or a time beside a sink reading from the beginning: the late
    sink gets only the events after its start / at or after its time."""
    config = make_config(tmp_path, sink_table("all") + sink_table("late", f'start_at = "{start_at}"'))
    journal = tmp_path / "audit.jsonl"
    old = write_events(journal, [None] * 30)
    h = Harness(config)
    await h.start()
    await until(lambda: len(h.sinks["all"].accepted) == 30)
    with AuditJournal(journal) as j:
        for i in range(30, 40):
            assert j.record("user.invited", id=f"e{i}", actor={"type": "user"},
                            occurred_at="2031-01-01T00:00:00.000Z")
    await until(lambda: len(h.sinks["all"].accepted) == 40)
    await until(lambda: len(h.sinks["late"].accepted) == 10)
    await h.stop()
    assert h.sinks["all"].accepted == [*old, *(f"e{i}" for i in range(30, 40))]
    assert h.sinks["late"].accepted == [f"e{i}" for i in range(30, 40)]


async def test_lines_held_for_joined_sinks_stay_under_the_bound(tmp_path, monkeypatch):
    """Many org streams whose batches only go out when the pass sends them: what the
    pass has handed out and not seen committed (batches being built and in flight) stays
    under its bound plus one read block; a sink whose batch stays in flight too long
    is sent to read alone, and every stream still gets exactly its events."""
    from auditshipd.delivery import fanout
    monkeypatch.setattr(fanout, "_PASS_BLOCK", 4096)
    monkeypatch.setattr(fanout, "_STALL", 0.5)
    orgs = [f"o{k}" for k in range(12)]
    big = "concurrency = 4\n[sinks.batch]\nmax_events = 1000\nmax_bytes = 10000000\ntimeout = 0.2"
    config = make_config(tmp_path, "read_block_bytes = 4096\n" + "".join(
        sink_table(o, f'organizations = ["{o}"]\n{big}') for o in orgs))
    # Half the events are o0's, whose destination hangs: its batches alone would fill
    # the bound.
    events = [orgs[0] if i % 2 else orgs[1 + i // 2 % (len(orgs) - 1)] for i in range(2400)]
    ids = write_events(tmp_path / "audit.jsonl", events)
    h = Harness(config)
    h.shared.memory_bytes = 24 * 1024  # ([journal] pass_memory_bytes is at least 1 MiB)
    await h.start()
    gate = asyncio.Event()
    h.sinks["o0"].gate = gate  # its first batch stays in flight
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, h.shared._held())
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        want = {o: [i for i, e in zip(ids, events, strict=True) if e == o] for o in orgs}
        await until(lambda: all(len(h.sinks[o].accepted) == len(want[o]) for o in orgs[1:]))
        assert not h.drivers["o0"]._joined  # left the pass: the others did not wait for it
    finally:
        watcher.cancel()
        gate.set()
    await until(lambda: len(h.sinks["o0"].accepted) == 1200)
    await h.stop()
    assert peak <= 24 * 1024 + 2 * 4096  # the bound and one read (a block and a line)
    for o in orgs:
        got = h.sinks[o].accepted
        assert got == want[o], (f"{o}: {len(got)} accepted ({len(set(got))} distinct),"
                                f" first {got[:1]}; sends: {h.sinks[o].batches()}")


async def test_an_org_stream_with_a_start_time_gets_its_lines_among_other_organizations(tmp_path):
    """A stream with organizations and a start_at time, joined to the pass, in chunks
    where other organizations' lines come first: exactly its organization's lines at or
    after its time (the time filter picked lines by their place in the whole chunk)."""
    config = make_config(tmp_path, sink_table("all")
                         + sink_table("acme", 'organizations = ["acme"]\nstart_at = "2030-01-01T00:00:00Z"'))
    journal = tmp_path / "audit.jsonl"
    h = Harness(config)
    await h.start()
    await until(lambda: all(d._joined for d in h.drivers.values()))
    with AuditJournal(journal) as j:
        for i in range(60):
            org = "globex" if i % 3 else "acme"
            when = "2031-01-01T00:00:00.000Z" if i >= 20 else "2029-01-01T00:00:00.000Z"
            assert j.record("user.invited", id=f"e{i}", actor={"type": "user"},
                            organization={"slug": org}, occurred_at=when)
    await until(lambda: len(h.sinks["all"].accepted) == 60)
    want = [f"e{i}" for i in range(20, 60) if i % 3 == 0]
    await until(lambda: len(h.sinks["acme"].accepted) >= len(want))
    await h.stop()
    assert h.sinks["acme"].accepted == want


async def test_behind_the_pass_sleeps_until_the_backlog_flush(tmp_path):
    """Working through a backlog, partial batches go out every _BACKLOG_FLUSH seconds: the
    pass's wait beside a read lasts until then, not 0 for timeouts long past (it used to
    spin for as long as each read ran, an event-loop turn after another)."""
    from auditshipd.delivery import fanout

    shared = SharedPass(make_config(tmp_path, sink_table("a")), ChangeSignal())
    now = asyncio.get_running_loop().time()
    shared._partial[object()] = now - 10.0  # a batch being built, its timeout long past
    shared._behind, shared._last_flush = True, now - 1.0
    assert shared._wait(now) == pytest.approx(fanout._BACKLOG_FLUSH - 1.0)
    shared._behind = False  # caught up: partial batches go out on their own timeout
    assert shared._wait(now) == 0.0


async def test_a_chunk_the_pass_fails_on_is_read_alone_and_the_pass_goes_on(tmp_path, monkeypatch,
                                                                           caplog):
    """Routing raises on the first chunk (a bug): the error is logged, the sinks read that
    chunk alone and get every event of it; later events, written once the pass went on,
    arrive too and the pass is still running; each event at least once."""
    from auditshipd.delivery import routing

    config = make_config(tmp_path, sink_table("acme", 'organizations = ["acme"]')
                         + sink_table("all"))
    ids = write_events(tmp_path / "audit.jsonl", ["acme", None] * 50)
    real = routing.Policy.route
    calls = {"n": 0}

    def failing_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise IndexError("a routing bug")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(routing.Policy, "route", failing_once)
    h = Harness(config)
    await h.start()
    await until(lambda: set(h.sinks["all"].accepted) >= set(ids))
    more = write_events(tmp_path / "audit.jsonl", ["acme"] * 20, start=100)
    await until(lambda: set(h.sinks["all"].accepted) >= set(ids + more))
    await until(lambda: set(h.sinks["acme"].accepted) >= set(ids[::2] + more))
    assert not any(t.done() for t in h.background)
    await h.stop()
    assert h.shared.failures == 1 and "a routing bug" in caplog.text
    assert set(h.sinks["acme"].accepted) == set(ids[::2] + more)


def _key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


async def _delete_a_segment_only_the_pass_reads(h: Harness, journal: Path, start: int) -> str:
    """With ``start`` events written so far: rotate the journal away, write 30 events to a
    new file and, once sink "fast" has them, rotate and delete it; write 10 more, then once
    the pass let it go one more, whose commit moves fast's cursor past it, so no sink the
    pass knows needs it. Returns the deleted segment's key."""
    os.rename(journal, journal.with_name("audit.jsonl.1"))
    write_events(journal, [None] * 30, start=start)
    second = _key(journal)
    await until(lambda: len(h.sinks["fast"].accepted) == start + 30)
    os.rename(journal, journal.with_name("audit.jsonl.2"))
    os.unlink(journal.with_name("audit.jsonl.2"))
    write_events(journal, [None] * 10, start=start + 30)
    await until(lambda: second not in h.shared.reader.segments)
    write_events(journal, [None], start=start + 40)
    await until(lambda: len(h.sinks["fast"].accepted) == start + 41 and not h.shared.kept)
    return second


async def test_a_segment_the_pass_reads_after_a_sink_left_and_that_is_deleted_reaches_it(tmp_path):
    """A sink reading alone is stuck in a dispatch (its destination hangs) while the pass,
    ahead of it, reads a new segment that is then rotated away and deleted: the sink's
    reader never saw that file by name. The pass hands it the segment as it lets it go,
    and the sink delivers its lines once its destination answers again."""
    config = make_config(tmp_path, "rotate_wait = 0.1\n"
                         + sink_table("slow", "[sinks.batch]\nmax_events = 10")
                         + sink_table("fast", "[sinks.batch]\nmax_events = 10"))
    journal = tmp_path / "audit.jsonl"
    h = Harness(config)
    await h.start()
    gate = asyncio.Event()
    h.sinks["slow"].gate = gate
    slow = h.drivers["slow"]
    ids = write_events(journal, [None] * 100)
    await until(lambda: len(h.sinks["fast"].accepted) == 100)
    ids += write_events(journal, [None] * 100, start=100)  # slow cannot take these
    first, size = _key(journal), journal.stat().st_size
    await until(lambda: slow.own_reader is not None and first in slow.own_reader.segments
                and slow.own_reader.segments[first].offset == size)  # then stuck dispatching
    os.rename(journal, tmp_path / "audit.jsonl.1")
    ids += write_events(journal, [None] * 30, start=200)
    second = _key(journal)
    await until(lambda: len(h.sinks["fast"].accepted) == 230)
    os.rename(journal, tmp_path / "audit.jsonl.2")
    os.unlink(tmp_path / "audit.jsonl.2")
    ids += write_events(journal, [None] * 10, start=230)
    await until(lambda: second not in h.shared.reader.segments)
    ids += write_events(journal, [None], start=240)  # its commit moves fast's cursor past it
    await until(lambda: len(h.sinks["fast"].accepted) == 241 and not h.shared.kept)
    assert second not in slow.own_reader.segments
    gate.set()
    await until(lambda: set(h.sinks["slow"].accepted) == set(ids))
    await h.stop()
    assert sorted(h.sinks["slow"].accepted) == sorted(ids)


class SlowStartSink(ScriptedSink):
    """Its start waits for ``ready`` (a destination that takes a while to connect)."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = asyncio.Event()
        self.starting = False

    async def start(self) -> None:
        self.starting = True
        await self.ready.wait()


async def test_a_sink_starting_slowly_behind_the_pass_keeps_a_segment_deleted_meanwhile(tmp_path):
    """A sink added behind the pass (start_at = "beginning") whose start takes a while: a
    segment deleted before its start ends was still read (the pass hands it over as it
    lets it go), not lost because no name reaches it any more."""
    h, late_sc, ids = await first_running(tmp_path, [None] * 50, head="rotate_wait = 0.1\n")
    journal = tmp_path / "audit.jsonl"
    h.config.sinks.append(late_sc)
    late = h.driver("late")
    sink = h.sinks["late"] = late.sink = SlowStartSink()
    await late.start()
    h.tasks.append(asyncio.create_task(late.run()))
    await until(lambda: sink.starting)
    gone = _key(journal)
    os.unlink(journal)
    ids += write_events(journal, [None] * 10, start=50)
    await until(lambda: gone not in h.shared.reader.segments)
    ids += write_events(journal, [None], start=60)  # its commit moves first's cursor past it
    await until(lambda: len(h.sinks["first"].accepted) == 61 and not h.shared.kept)
    sink.ready.set()
    await until(lambda: set(sink.accepted) == set(ids))
    await h.stop()
    assert sorted(sink.accepted) == sorted(ids)


async def test_a_sink_stopped_before_its_start_ended_hands_over_what_it_was_handed(tmp_path):
    """A sink behind the pass is stopped (a reload) while its start still waits: the
    descriptor of a deleted segment its cursor is in, handed to it by the driver it
    replaced, goes on to its successor instead of being dropped unread."""
    h, late_sc, _ = await first_running(tmp_path, [None] * 50, head="rotate_wait = 0.1\n")
    config, journal = h.config, tmp_path / "audit.jsonl"
    first = h.drivers["first"]
    await until(lambda: first.committed.segments)
    behind = dict(first.committed.segments)
    write_events(journal, [None] * 20, start=50)
    gone, fd = _key(journal), os.open(journal, os.O_RDONLY)
    os.unlink(journal)
    write_events(journal, [None] * 10, start=70)
    await until(lambda: gone not in h.shared.reader.segments)
    write_events(journal, [None], start=80)  # its commit moves first's cursor past it
    await until(lambda: len(h.sinks["first"].accepted) == 81 and not h.shared.kept)
    config.sinks.append(late_sc)
    late = h.driver("late")
    sink = h.sinks["late"] = late.sink = SlowStartSink()
    late.cursors.save(CursorState(sink="late", segments=behind))
    late.inherit = {gone: (str(journal), fd)}
    await late.start()
    task = asyncio.create_task(late.run())
    await until(lambda: sink.starting)
    late.stop()
    await asyncio.wait_for(task, 10)
    assert list(late.leftover) == [gone]
    os.close(late.leftover[gone][1])
    await h.stop()


class FailingThenHangingSink(ScriptedSink):
    """The first send fails as retryable (the sink then takes no lines from the pass and
    reads alone), the next ones wait for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.sends = 0

    async def send(self, batch: Batch) -> None:
        self.sends += 1
        if self.sends == 1:
            raise RetryableError("503 Service Unavailable")
        await super().send(batch)


async def test_a_stopping_sink_hands_over_a_segment_the_pass_let_go_while_it_drained(
        tmp_path, monkeypatch):
    """A sink reading alone (its destination has been retrying for a while: the pass does
    not take it back) is stopped (a reload) while its batches are still in flight: it
    drains them, and a segment the pass read, let go and that was deleted meanwhile
    (never seen by the sink's reader) is handed to its successor, not dropped."""
    monkeypatch.setattr(fanout, "_STALL", 0.01)
    retry = "[sinks.retry]\ninitial_backoff = 0.01\nmax_backoff = 0.05\n"
    config = make_config(tmp_path, "rotate_wait = 0.1\n" + sink_table(
        "slow", "concurrency = 2\n[sinks.batch]\nmax_events = 1000\ntimeout = 0.05\n" + retry)
        + sink_table("fast", "[sinks.batch]\ntimeout = 0.05"))
    journal = tmp_path / "audit.jsonl"
    h = Harness(config)
    await h.start()
    slow = h.drivers["slow"]
    sink = h.sinks["slow"] = slow.sink = FailingThenHangingSink()
    write_events(journal, [None] * 5)
    await until(lambda: sink.sends >= 2)  # failed once, retried: it is retrying
    write_events(journal, [None] * 5, start=5)  # read alone: the pass has no room for it
    first, size = _key(journal), journal.stat().st_size
    await until(lambda: slow.own_reader is not None and first in slow.own_reader.segments
                and slow.own_reader.segments[first].offset == size and len(slow._tasks) == 2)
    assert not slow._joined
    slow.stop()  # stops reading; its two batches are still in flight
    second = await _delete_a_segment_only_the_pass_reads(h, journal, 10)
    sink.gate.set()
    await asyncio.wait_for(h.tasks[0], 10)
    assert second in slow.leftover
    for _path, fd in slow.leftover.values():
        os.close(fd)
    await h.stop()


async def test_a_joined_sink_stopping_hands_over_a_segment_the_pass_let_go_while_it_drained(
        tmp_path):
    """A sink joined to the pass is stopped (a reload) with a batch in flight: while it
    drains it, the pass reads on, lets go of a segment that is then deleted; the sink
    never had its lines, and its successor gets the segment instead of losing them."""
    config = make_config(tmp_path, "rotate_wait = 0.1\n" + sink_table(
        "slow", "[sinks.batch]\nmax_events = 1000\ntimeout = 0.05")
        + sink_table("fast", "[sinks.batch]\ntimeout = 0.05"))
    journal = tmp_path / "audit.jsonl"
    h = Harness(config)
    await h.start()
    slow = h.drivers["slow"]
    gate = h.sinks["slow"].gate = asyncio.Event()
    write_events(journal, [None] * 5)
    await until(lambda: len(slow._tasks) == 1 and len(h.sinks["fast"].accepted) == 5)
    assert slow._joined
    slow.stop()  # its batch is still in flight
    await until(lambda: not slow._joined)
    second = await _delete_a_segment_only_the_pass_reads(h, journal, 5)
    gate.set()
    await asyncio.wait_for(h.tasks[0], 10)
    assert list(slow.leftover) == [second]
    os.close(slow.leftover[second][1])
    await h.stop()


async def test_descriptors_are_taken_from_the_pass_between_two_of_its_reads(tmp_path):
    """A sink leaving the pass (or stopping) takes duplicates of the pass's descriptors
    between two of its reads: a read closes the segments it lets go, in its thread, and
    a duplicate taken meanwhile could be of another file given the same number."""
    import threading

    config = make_config(tmp_path, sink_table("only"))
    journal = tmp_path / "audit.jsonl"
    write_events(journal, [None] * 3)
    h = Harness(config)
    await h.start()
    await until(lambda: len(h.sinks["only"].accepted) == 3)
    reader = h.shared.reader
    entered, go = threading.Event(), threading.Event()
    read = reader._read

    def blocked_read(seg: Any) -> Any:
        entered.set()
        go.wait(10)
        return read(seg)

    reader._read = blocked_read
    try:
        await until(entered.is_set)
        taking = asyncio.ensure_future(h.shared.held_segments([_key(journal)]))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not taking.done()
    finally:
        go.set()
    assert await asyncio.wait_for(taking, 10) == {}  # still in the glob: nothing to hold
    reader._read = read
    await h.stop()


async def _late_sink_handed_an_unread_segment(tmp_path: Path) -> tuple[Harness, SinkDriver, str,
                                                                         list[str]]:
    """Sink "first" reads a segment that is then deleted and let go by the pass; sink
    "late" (a successor: started, at the pass's position, which no longer names that
    segment) is handed its descriptor, as a driver that stopped before reading the
    segment hands it on. Returns the harness, late's driver (started, not run), the
    segment's key and its events' ids."""
    h, late_sc, ids = await first_running(tmp_path, [None] * 5, "[sinks.batch]\ntimeout = 0.05",
                                          head="rotate_wait = 0.1\n")
    config, journal = h.config, tmp_path / "audit.jsonl"
    first = h.drivers["first"]
    gone, fd = _key(journal), os.open(journal, os.O_RDONLY)
    os.unlink(journal)
    await until(lambda: not h.shared.reader.segments and not h.shared.position
                and not first.committed.segments)
    config.sinks.append(late_sc)
    late = h.driver("late")
    late.cursors.save(CursorState(sink="late", segments={}, acked_events=7, started=True))
    late.inherit = {gone: (str(journal), fd)}
    await late.start()
    return h, late, gone, ids


async def test_a_sink_handed_a_segment_it_has_not_read_reads_it_before_joining(tmp_path):
    """A sink whose position is the pass's, handed a deleted segment the pass read and
    let go but the sink never had (its predecessor stopped before reading it), reads it
    alone before joining the pass: joining at once would drop it, its lines lost."""
    h, late, _gone, ids = await _late_sink_handed_an_unread_segment(tmp_path)
    h.tasks.append(asyncio.create_task(late.run()))
    await until(lambda: set(h.sinks["late"].accepted) == set(ids))
    more = write_events(tmp_path / "audit.jsonl", [None] * 3, start=5)
    await until(lambda: len(h.sinks["late"].accepted) == 8 and late._joined)
    await h.stop()
    assert h.sinks["late"].accepted == ids + more


async def test_a_sink_stopped_before_reading_hands_on_a_segment_it_has_not_read(tmp_path):
    """The same sink stopped (another reload) before it read anything: the segment
    outside its position goes on to its successor, not dropped as one it finished."""
    h, late, gone, _ids = await _late_sink_handed_an_unread_segment(tmp_path)
    late.stop()
    await asyncio.wait_for(late.run(), 10)
    assert list(late.leftover) == [gone]
    os.close(late.leftover[gone][1])
    await h.stop()


@pytest.mark.parametrize("how", ["marks", "released"])
async def test_a_segment_only_a_batch_read_alone_names_is_still_needed(tmp_path, how):
    """A batch read alone, not acknowledged yet, whose lines come from a segment the
    sink's cursor does not name (first read after the last acknowledgement: a
    copytruncate copy) keeps that segment needed: the pass keeps its descriptor for the
    sink's successor instead of letting it go (a reload or a crash then lost its lines)."""
    from auditshipd.delivery.batcher import PendingBatch
    from auditshipd.delivery.positions import needs_segment
    from auditshipd.journal.cursor import SegmentCursor

    h = Harness(make_config(tmp_path, sink_table("only")))
    await h.start()
    h.shared.sharing = lambda: list(h.drivers.values())  # as the daemon sets it
    only = h.drivers["only"]
    job = PendingBatch()
    if how == "marks":
        job.marks["9:9"] = SegmentCursor(path="copy", offset=10, head_len=0, head_hash="",
                                         tail_hash="")
    else:
        job.released.append("9:9")
    assert not only.holds_segment("9:9")
    only._inflight.append(job)
    try:
        assert only.holds_segment("9:9") and needs_segment(only, "9:9")
        assert h.shared._needed("9:9")
    finally:
        only._inflight.remove(job)
    await h.stop()
