"""A sink that raises an unexpected exception for one event of a batch, through the
daemon: only that event is dead-lettered (with the reason); the rest is delivered."""

from __future__ import annotations

import pytest

from auditshipd import AuditJournal
from auditshipd.delivery.deadletters import DeadLetterFile
from auditshipd.testing import read_jsonl_ids, wait_for

pytestmark = pytest.mark.integration


def test_far_future_event_is_set_aside_and_its_batch_delivered(ws):
    """500 events in one batch, one dated 2300-01-01 (the epoch sink overflows on it):
    499 delivered in journal order, the culprit alone in the dead-letter file with
    OverflowError as its reason."""
    out = ws.root / "epoch.jsonl"
    ws.write_config(f"""
[[sinks]]
name = "epoch"
type = "epoch"
out = "{out}"
[sinks.batch]
max_events = 1000
timeout = 0.5
""")
    j = AuditJournal(ws.journal)
    ids = [f"p-{i:04d}" for i in range(500)]
    for i, eid in enumerate(ids):
        when = "2300-01-01T00:00:00Z" if i == 321 else "2024-05-01T12:00:00Z"
        assert j.record("user.invited", id=eid, occurred_at=when,
                        actor={"type": "user", "email": "a@acme.test"})
    j.close()
    dlq = DeadLetterFile(ws.state, "epoch")
    with ws.daemon() as d:
        d.wait_started()
        wait_for(lambda: len(read_jsonl_ids(out)) + dlq.count()[1] >= 500, 30,
                 message="every event delivered or dead-lettered")
        assert d.terminate() == 0
    assert read_jsonl_ids(out) == ids[:321] + ids[322:]
    letters = dlq.read()
    assert [e["id"] for x in letters for e in x.events] == [ids[321]]
    assert "OverflowError" in letters[0].error
