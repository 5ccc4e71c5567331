"""Many organization streams through the real daemon and its shared pass: each stream gets
exactly its organization's events; a stream whose receiver is down leaves the pass and
catches up while the others keep going; a stream added by a reload backfills then joins;
kill -9 loses nothing; copytruncate under the pass; the default config redacts once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from tests.helpers.sinks import file_sink, http_sink

import auditshipd
from auditshipd import AuditJournal
from auditshipd.service import daemon as daemon_module
from auditshipd.service.daemon import Daemon
from auditshipd.testing import WebhookReceiver, free_port, read_jsonl_ids, wait_for
from auditshipd.testing import write_events as write_plain

pytestmark = pytest.mark.integration


def stream(name: str, org: str, out: Path, extra: str = "") -> str:
    return f"""
[[sinks]]
name = "{name}"
type = "file"
path = "{out}"
organizations = ["{org}"]
{extra}
[sinks.batch]
max_events = 20
timeout = 0.05
"""


def write_events(journal: Path, orgs: list[str], n: int, prefix: str = "ev") -> dict[str, list[str]]:
    by_org: dict[str, list[str]] = {o: [] for o in orgs}
    with AuditJournal(journal) as j:
        for i in range(n):
            org = orgs[i % len(orgs)]
            eid = f"{prefix}-{i:06d}"
            assert j.record("user.updated", id=eid, organization={"slug": org},
                            actor={"type": "user", "email": f"a@{org}.test"})
            by_org[org].append(eid)
    return by_org


def test_120_org_streams_each_get_exactly_their_events(ws):
    """120 org streams (and one unscoped sink) over one journal written before and while
    the daemon runs: each file holds exactly its organization's events, once each."""
    orgs = [f"org{k:03d}" for k in range(120)]
    outs = {o: ws.root / "out" / f"{o}.jsonl" for o in orgs}
    sinks = "".join(stream(f"s-{o}", o, outs[o]) for o in orgs)
    sinks += f'\n[[sinks]]\nname = "all"\ntype = "file"\npath = "{ws.out}"\n'
    ws.write_config(sinks)
    first = write_events(ws.journal, orgs, 1200, "a")
    with ws.daemon() as d:
        d.wait_started()
        second = write_events(ws.journal, orgs, 1200, "b")
        wait_for(lambda: len(read_jsonl_ids(ws.out)) >= 2400, 60, message="unscoped sink")
        wait_for(lambda: all(len(read_jsonl_ids(outs[o])) >= 20 for o in orgs), 60,
                 message="every stream")
        assert d.terminate() == 0
    for o in orgs:
        got = read_jsonl_ids(outs[o])
        assert got == first[o] + second[o], o
        assert f'"slug":"{o}"'.encode() in outs[o].read_bytes()
    assert Counter(read_jsonl_ids(ws.out)) == Counter(
        [e for o in orgs for e in first[o] + second[o]])


@pytest.mark.parametrize("n_orgs", [20, 200])
def test_a_down_stream_leaves_the_pass_and_catches_up_while_the_others_go_on(ws, n_orgs):
    """One http stream's receiver refuses connections: the other streams (19, and 199)
    keep receiving everything meanwhile; once the receiver listens the down stream gets
    all its events, each once."""
    orgs = [f"org{k:03d}" for k in range(n_orgs)]
    port = free_port()
    outs = {o: ws.root / "out" / f"{o}.jsonl" for o in orgs[1:]}
    sinks = f"""
[[sinks]]
name = "down"
type = "http"
url = "http://127.0.0.1:{port}/ingest"
organizations = ["{orgs[0]}"]
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.3
[sinks.batch]
max_events = 20
timeout = 0.05
""" + "".join(stream(f"s-{o}", o, outs[o]) for o in orgs[1:])
    ws.write_config(sinks)
    with ws.daemon() as d:
        d.wait_started()
        by_org = write_events(ws.journal, orgs, 100 * n_orgs)
        wait_for(lambda: all(len(read_jsonl_ids(outs[o])) == 100 for o in orgs[1:]), 60,
                 message="the other streams, while one is down")
        more = write_events(ws.journal, orgs, 20 * n_orgs, "late")
        wait_for(lambda: all(len(read_jsonl_ids(outs[o])) == 120 for o in orgs[1:]), 60,
                 message="the other streams keep going")
        with WebhookReceiver(port=port) as rcv:
            wait_for(lambda: len(set(rcv.ids())) == 120, 60, message="the down stream")
            assert d.terminate() == 0
            # refused connections reached no one: each event arrives once
            assert sorted(rcv.ids()) == sorted(by_org[orgs[0]] + more[orgs[0]])
    for o in orgs[1:]:
        assert read_jsonl_ids(outs[o]) == by_org[o] + more[o]


def test_a_stream_added_by_reload_backfills_then_joins(ws):
    """A stream file added while the daemon runs, start_at = "beginning": it gets its
    organization's whole history, then what follows, once each; the existing stream
    is not disturbed."""
    streams = ws.root / "streams"
    streams.mkdir()
    acme_out, globex_out = ws.root / "out" / "acme.jsonl", ws.root / "out" / "globex.jsonl"
    (streams / "acme.toml").write_text(f'[[sinks]]\nname = "siem"\ntype = "file"\npath = "{acme_out}"\n')
    ws.write_config("", extra=f'streams_dir = "{streams}"')
    old = write_events(ws.journal, ["acme", "globex"], 600)
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(read_jsonl_ids(acme_out)) == 300, 30, message="acme")
        (streams / "globex.toml").write_text(
            f'[[sinks]]\nname = "siem"\ntype = "file"\npath = "{globex_out}"\n'
            'start_at = "beginning"\n')
        wait_for(lambda: len(read_jsonl_ids(globex_out)) == 300, 30, message="backfill")
        new = write_events(ws.journal, ["acme", "globex"], 200, "new")
        wait_for(lambda: len(read_jsonl_ids(globex_out)) == 400, 30, message="after join")
        assert d.terminate() == 0
    assert read_jsonl_ids(globex_out) == old["globex"] + new["globex"]
    assert read_jsonl_ids(acme_out) == old["acme"] + new["acme"]


def test_kill_9_with_many_streams_loses_nothing(ws):
    """kill -9 at random moments while 40 streams ship a growing journal: in the end each
    stream holds all its events (duplicates only from the crashes)."""
    orgs = [f"org{k:02d}" for k in range(40)]
    outs = {o: ws.root / "out" / f"{o}.jsonl" for o in orgs}
    ws.write_config("".join(stream(f"s-{o}", o, outs[o]) for o in orgs))
    rnd = random.Random(7)
    by_org: dict[str, list[str]] = {o: [] for o in orgs}
    d = ws.daemon()
    try:
        for round_ in range(6):
            d.start()
            for o, ids in write_events(ws.journal, orgs, 800, f"r{round_}").items():
                by_org[o] += ids
            time.sleep(rnd.uniform(0.2, 0.8))  # the random moment of the crash is the point
            d.kill()
        d.start()
        d.wait_started()
        wait_for(lambda: all(set(read_jsonl_ids(outs[o])) >= set(by_org[o]) for o in orgs),
                 90, message="every stream complete")
        assert d.terminate() == 0
    finally:
        if d.poll() is None:
            d.kill()
    for o in orgs:
        got = read_jsonl_ids(outs[o])
        assert set(got) == set(by_org[o]), o


def test_copytruncate_under_the_shared_pass(ws):
    """copytruncate while 10 streams ship: the copy continues where the pass was, the
    truncated file restarts at 0; every stream gets each event (none lost)."""
    orgs = [f"org{k}" for k in range(10)]
    outs = {o: ws.root / "out" / f"{o}.jsonl" for o in orgs}
    ws.write_config("".join(stream(f"s-{o}", o, outs[o]) for o in orgs))
    with ws.daemon() as d:
        d.wait_started()
        first = write_events(ws.journal, orgs, 500, "a")
        wait_for(lambda: all(len(read_jsonl_ids(outs[o])) == 50 for o in orgs), 30)
        shutil.copyfile(ws.journal, f"{ws.journal}.1")
        with open(ws.journal, "r+b") as f:
            f.truncate(0)
        second = write_events(ws.journal, orgs, 500, "b")
        wait_for(lambda: all(set(read_jsonl_ids(outs[o])) >= set(second[o]) for o in orgs), 30)
        assert d.terminate() == 0
    for o in orgs:
        got = read_jsonl_ids(outs[o])
        assert set(got) == set(first[o] + second[o])
        assert len(got) == len(set(got)), "the copy is not read again"


class _Counting:
    """A redactor that counts the lines it redacts (wrapping the daemon's own)."""

    def __init__(self, inner, counter: Counter[str], name: str) -> None:
        self.inner, self.counter, self.name = inner, counter, name

    def __call__(self, event):
        return self.inner(event)

    def redact_line(self, line: bytes) -> bytes:
        self.counter[self.name] += 1
        return self.inner.redact_line(line)


def test_the_default_config_decodes_and_redacts_each_event_once(tmp_path, monkeypatch):
    """The embedded default config (a file sink and the portal) run in-process: each
    journal line is redacted once, though both sinks get every event."""
    calls: Counter[str] = Counter()
    build = daemon_module.build_redactors

    def counting(config):
        wrapped: dict[int, _Counting] = {}
        out = {}
        for name, r in build(config).items():
            out[name] = wrapped.setdefault(id(r), _Counting(r, calls, f"policy-{len(wrapped)}"))
        return out

    monkeypatch.setattr(daemon_module, "build_redactors", counting)
    monkeypatch.chdir(tmp_path)
    text = (Path(auditshipd.__file__).parent / "default.toml").read_text()
    text = text.replace('listen = "127.0.0.1:8750"', f'listen = "127.0.0.1:{free_port()}"')
    text = text.replace('listen = "127.0.0.1:9750"', f'listen = "127.0.0.1:{free_port()}"')
    (tmp_path / "auditshipd.toml").write_text(text)
    journal = tmp_path / "var" / "journal" / "audit.jsonl"
    journal.parent.mkdir(parents=True)
    ids = [f"ev-{i}" for i in range(500)]
    with AuditJournal(journal) as j:
        for eid in ids:
            assert j.record("user.updated", id=eid, actor={"type": "user", "email": "a@b.test"})

    async def scenario() -> None:
        d = Daemon(tmp_path / "auditshipd.toml")
        task = asyncio.create_task(d.serve())
        out = tmp_path / "var" / "out" / "audit.jsonl"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(read_jsonl_ids(out)) < 500 or d.drivers["portal"].committed.acked_events < 500:
            assert loop.time() < deadline, "both sinks delivered"
            await asyncio.sleep(0.05)
        d.should_exit.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert read_jsonl_ids(tmp_path / "var" / "out" / "audit.jsonl") == ids
    assert sum(calls.values()) == 500, calls
    assert os.path.exists(tmp_path / "var" / "state" / "cursors" / "portal.json")
    assert json.loads((tmp_path / "var" / "state" / "cursors" / "portal.json").read_bytes())[
        "acked_events"] == 500


def test_a_sink_leaving_the_pass_reads_a_rotated_and_deleted_segment_to_its_end(ws, tmp_path):
    """The SIEM is down while logrotate renames the journal and removes the rotated file
    at once (create + compress without delaycompress): the retrying sink leaves the pass
    behind that segment, which no name reaches any more; it reads on from the pass's
    descriptor and, once the SIEM is back, every event arrives."""
    with WebhookReceiver() as rx:
        ws.write_config(http_sink(rx.url, "web") + file_sink(ws.out, "copy", batch="timeout = 0.05"))
        with ws.daemon() as d:
            d.wait_started()
            want = write_plain(ws.journal, "a", 10)
            wait_for(lambda: len(rx.ids()) >= 10 and len(read_jsonl_ids(ws.out)) >= 10, 15)
            rx.set_script([], default=503)
            n = rx.requests
            want += write_plain(ws.journal, "x", 1)
            wait_for(lambda: rx.requests >= n + 2, 15, message="web retrying")
            staging = tmp_path / "staging.jsonl"
            want += write_plain(staging, "b", 200)
            with open(ws.journal, "ab") as f:
                f.write(staging.read_bytes())
            rotated = ws.journal.with_name("audit.jsonl.1")
            os.rename(ws.journal, rotated)
            os.unlink(rotated)
            wait_for(lambda: len(read_jsonl_ids(ws.out)) >= 211, 15, message="the file sink")
            rx.set_script([], default=200)
            wait_for(lambda: set(rx.ids()) >= set(want), 30, message="web catches up")
            assert d.terminate() == 0
    assert set(read_jsonl_ids(ws.out)) == set(want)
