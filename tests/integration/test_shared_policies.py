"""Sinks with equal ``[sinks.redaction]`` tables share one compiled redactor, so the
shared pass redacts each journal line once per distinct policy, not once per sink."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from auditshipd import AuditJournal
from auditshipd.service import daemon as daemon_module
from auditshipd.service.daemon import Daemon
from auditshipd.service.loading import build_redactors, load_runtime
from auditshipd.testing import read_jsonl_ids

pytestmark = pytest.mark.integration

SAME = '[sinks.redaction]\nallow = ["action", "actor.email"]\n'
OTHER = '[sinks.redaction]\nallow = ["action"]\n'


def _config(tmp_path: Path) -> Path:
    text = f'[journal]\npath = "{tmp_path}/audit.jsonl"\nstate_dir = "{tmp_path}/state"\n'
    text += "poll_interval = 0.05\n[metrics]\nenabled = false\n"
    for name, table in (("a", ""), ("b", ""), ("r1", SAME), ("r2", SAME), ("r3", OTHER)):
        text += (f'[[sinks]]\nname = "{name}"\ntype = "file"\npath = "{tmp_path}/{name}.jsonl"\n'
                 f"fsync = false\n{table}[sinks.batch]\ntimeout = 0.02\n")
    config = tmp_path / "auditshipd.toml"
    config.write_text(text)
    return config


def test_equal_override_tables_share_one_redactor(tmp_path: Path) -> None:
    config, _, _ = load_runtime(_config(tmp_path))
    r = build_redactors(config)
    assert r["a"] is r["b"]
    assert r["r1"] is r["r2"]
    assert r["r3"] is not r["r1"] and r["r3"] is not r["a"] and r["r1"] is not r["a"]
    again = build_redactors(config)  # another load compiles afresh
    assert again["r1"] is not r["r1"] and again["r1"] is again["r2"]


class _Counting:
    def __init__(self, inner, counter: Counter[int], key: int) -> None:
        self.inner, self.counter, self.key = inner, counter, key

    def __call__(self, event):
        return self.inner(event)

    def redact_line(self, line: bytes) -> bytes:
        self.counter[self.key] += 1
        return self.inner.redact_line(line)


def test_the_shared_pass_redacts_a_line_once_per_distinct_policy(tmp_path, monkeypatch):
    calls: Counter[int] = Counter()
    build = daemon_module.build_redactors

    def counting(config):
        wrapped: dict[int, _Counting] = {}
        return {name: wrapped.setdefault(id(r), _Counting(r, calls, id(r)))
                for name, r in build(config).items()}

    monkeypatch.setattr(daemon_module, "build_redactors", counting)
    config = _config(tmp_path)
    ids = [f"ev-{i}" for i in range(200)]
    with AuditJournal(tmp_path / "audit.jsonl") as j:
        for eid in ids:
            assert j.record("user.updated", id=eid, actor={"type": "user", "email": "a@b.test"})

    async def scenario() -> None:
        d = Daemon(config)
        task = asyncio.create_task(d.serve())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while any(len(read_jsonl_ids(tmp_path / f"{n}.jsonl")) < 200
                  for n in ("a", "b", "r1", "r2", "r3")):
            assert loop.time() < deadline, "every sink delivered"
            await asyncio.sleep(0.05)
        d.should_exit.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert len(calls) == 3 and sum(calls.values()) == 3 * 200, calls
