"""The driver with ``integrity = true`` (delivery.sealing), on the delivery core's fake
sink and clock: lines sealed in order, a digest batch when one is due, and the chain state
committed with the cursor over the acknowledged prefix only."""

from __future__ import annotations

import asyncio

import msgspec
from tests.unit.test_delivery_driver import FakeClock, ScriptedSink, make_driver, run, stop, until

from auditshipd.integrity.chain import unseal
from auditshipd.integrity.keys import generate_key
from auditshipd.journal.cursor import CursorStore


async def test_integrity_seals_sends_digests_and_commits_the_chain_with_the_cursor(tmp_path):
    """Five events in batches of two, two in flight, a digest due every 3 events: the
    first batch is held while the rest (and the digest) are accepted; the chain state in
    the cursor stays where it was until the first batch is acknowledged, then it is the
    state after the last event."""
    generate_key(tmp_path / "k")
    gate = asyncio.Event()
    sent: list[bytes] = []

    def script(batch):
        sent.extend(batch.lines)
        return gate if batch.first_id == "e0" else None

    sink = ScriptedSink(script)
    driver = make_driver(tmp_path, sink, FakeClock(), 5, sink_table=f"""
integrity = true
concurrency = 2
[sinks.batch]
max_events = 2
timeout = 0.05
[integrity]
signing_key = "{tmp_path / 'k'}"
digest_events = 3
""")
    task = await run(driver)
    await until(lambda: "e4" in sink.accepted)
    assert driver.committed.integrity is None  # e0-e1 still in flight
    digests = [msgspec.json.decode(line) for line in sent if b'"auditshipd.digest"' in line]
    assert [(d["digest"]["first_seq"], d["digest"]["last_seq"]) for d in digests] == [(1, 4)]
    gate.set()
    await until(lambda: driver.committed.integrity is not None)
    assert driver.committed.integrity["seq"] == 5
    assert driver.committed.integrity["digest_seq"] == 4
    await stop(driver, task)
    seqs = {}
    for line in sent:
        if b'"auditshipd.digest"' not in line:
            sealed = unseal(line)
            assert sealed is not None
            seqs[msgspec.json.decode(line)["id"]] = sealed[0]
    assert seqs == {f"e{i}": i + 1 for i in range(5)}
    saved = CursorStore(tmp_path / "state").load("fake")
    assert saved.integrity == driver.committed.integrity
