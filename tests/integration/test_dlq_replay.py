"""`auditshipd dlq replay` and `dlq list` as the operator runs them (a real process, the
drop-in test sinks): a letter is removed only when delivered, whatever goes wrong;
what stays is counted and the exit code says so; a torn line is reported and kept."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from auditshipd.delivery.deadletters import DeadLetter, DeadLetterFile
from auditshipd.testing import read_jsonl_ids

pytestmark = pytest.mark.integration


def _cli(ws, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditshipd.cli", "dlq", *args, "-c",
                           str(ws.config)], capture_output=True, text=True, cwd=ws.root,
                          timeout=timeout)


def _letter(sink: str, ids: list[str], when: str = "2024-05-01T12:00:00Z") -> DeadLetter:
    return DeadLetter(sink=sink, error="earlier failure", retryable=False, attempts=1,
                      first_attempt_at="2024-05-01T12:00:00.000+00:00",
                      last_attempt_at="2024-05-01T12:00:00.000+00:00",
                      dead_lettered_at="2024-05-01T12:00:00.000+00:00",
                      events=[{"id": i, "action": "user.invited", "occurred_at": when}
                              for i in ids])


def _flaky(ws, script: str = "", extra: str = "", retry: str = "") -> tuple:
    out, script_path = ws.root / "flaky.jsonl", ws.root / "script.txt"
    script_path.write_text(script)
    ws.write_config(f"""
[[sinks]]
name = "flaky"
type = "flaky"
out = "{out}"
script = "{script_path}"
{extra}
[sinks.retry]
initial_backoff = 0.01
max_backoff = 0.05
{retry}
""")
    return out, DeadLetterFile(ws.state, "flaky")


def _ids(dlf: DeadLetterFile) -> list[list[str]]:
    return [[e["id"] for e in x.events] for x in dlf.read()]


def test_unexpected_exception_keeps_only_the_culprit_and_exits_non_zero(ws):
    """Three letters; the epoch sink raises OverflowError on one event of the first.
    The culprit alone stays (with the reason), every other event is delivered, the
    exit code is 1 and stderr says how many events stay."""
    out = ws.root / "epoch.jsonl"
    ws.write_config(f"""
[[sinks]]
name = "epoch"
type = "epoch"
out = "{out}"
""")
    dlf = DeadLetterFile(ws.state, "epoch")
    first = _letter("epoch", ["a1", "a2", "a3"])
    first.events[1]["occurred_at"] = "2300-01-01T00:00:00Z"
    dlf.append(first)
    dlf.append(_letter("epoch", ["b1", "b2"]))
    dlf.append(_letter("epoch", ["c1"]))
    res = _cli(ws, "replay", "--sink", "epoch", "--json")
    assert res.returncode == 1, res.stderr
    row = json.loads(res.stdout.splitlines()[-1])
    assert {k: row[k] for k in ("sink", "replayed", "still_dead_lettered")} == {
        "sink": "epoch", "replayed": 5, "still_dead_lettered": 1}
    assert "1 event(s) in 1 dead letter(s) stay" in res.stderr
    assert read_jsonl_ids(out) == ["a1", "a3", "b1", "b2", "c1"]
    (kept,) = dlf.read()
    assert [e["id"] for e in kept.events] == ["a2"]
    assert "OverflowError" in kept.error and kept.attempts == 2


def test_sink_that_cannot_start_keeps_every_letter(ws):
    """start() raises a RuntimeError: nothing is deleted, in order; exit code 1."""
    _, dlf = _flaky(ws, extra='start_error = "crash"')
    for n in range(3):
        dlf.append(_letter("flaky", [f"s{n}"]))
    before = dlf.path.read_bytes()
    res = _cli(ws, "replay", "--sink", "flaky")
    assert res.returncode == 1
    assert "RuntimeError" in res.stderr and "3 event(s) in 3 dead letter(s) stay" in res.stderr
    assert dlf.path.read_bytes() == before


def test_crash_mid_replay_keeps_the_letters_not_delivered_in_order(ws):
    """The first letter is delivered, the second makes the sink raise a RuntimeError:
    only the first leaves the file; the second (isolated to its one event) and the
    third stay in order."""
    out, dlf = _flaky(ws, script="ok\ncrash\nok\n")
    dlf.append(_letter("flaky", ["d1"]))
    dlf.append(_letter("flaky", ["d2"]))
    dlf.append(_letter("flaky", ["d3"]))
    res = _cli(ws, "replay", "--sink", "flaky")
    assert res.returncode == 1
    assert read_jsonl_ids(out) == ["d1", "d3"]
    assert _ids(dlf) == [["d2"]]


def test_replay_honours_rejected_and_resends_the_rest(ws):
    """The sink accepts 1 event then rejects 1 (PermanentError rejected=1): only that one
    stays; the 3 after it are sent again and delivered."""
    out, dlf = _flaky(ws, script="partial 1\n")
    dlf.append(_letter("flaky", ["r1", "r2", "r3", "r4", "r5"]))
    res = _cli(ws, "replay", "--sink", "flaky")
    assert res.returncode == 1
    assert read_jsonl_ids(out) == ["r1", "r3", "r4", "r5"]
    assert _ids(dlf) == [["r2"]]


def test_replay_honours_attempt_timeout(ws):
    """A receiver that never answers: each attempt ends at retry.attempt_timeout, the
    letter stays with the timeout as its error, the command ends (exit 1)."""
    _, dlf = _flaky(ws, script="hang\nhang\nhang\n",
                    retry="attempt_timeout = 0.3")
    dlf.append(_letter("flaky", ["h1"]))
    started = time.monotonic()
    res = _cli(ws, "replay", "--sink", "flaky", timeout=30)
    assert res.returncode == 1
    assert time.monotonic() - started < 20
    (kept,) = dlf.read()
    assert "timed out" in kept.error and kept.attempts == 1 + 3


def test_torn_last_line_is_reported_kept_and_the_rest_replayed(ws):
    """A crash cut the last append: `dlq list` counts the readable letters and names the
    torn line; replay delivers them, keeps the torn bytes, exits 1 and says so."""
    out, dlf = _flaky(ws)
    dlf.append(_letter("flaky", ["t1"]))
    dlf.append(_letter("flaky", ["t2", "t3"]))
    torn = b'{"sink":"flaky","error":"x","retryable":false,"attempts":1,"events":[{"id":"t4'
    with open(dlf.path, "ab") as f:
        f.write(torn)
    res = _cli(ws, "list")
    assert res.returncode == 0, res.stderr
    assert "flaky" in res.stdout and " 2 " in res.stdout and " 3 " in res.stdout
    assert "1 unreadable line(s) (line 3)" in res.stderr
    res = _cli(ws, "replay", "--sink", "flaky", "--json")
    assert res.returncode == 1
    assert json.loads(res.stdout.splitlines()[-1])["replayed"] == 3
    assert "unreadable line(s)" in res.stderr
    assert read_jsonl_ids(out) == ["t1", "t2", "t3"]
    assert dlf.read() == [] and torn in dlf.path.read_bytes()


def test_a_letter_that_fails_again_keeps_the_sinks_secrets_masked(ws, monkeypatch):
    """The receiver echoes the sink's key in its refusal: the rewritten letter, the
    output and the exit message show *** where the daemon's letters do."""
    key = "k7Qz9vW2mX4pL8rT"
    monkeypatch.setenv("ECHO_KEY", key)
    ws.write_config("""
[[sinks]]
name = "echo"
type = "echo_key"
api_key = "${ECHO_KEY}"
[sinks.retry]
initial_backoff = 0.01
max_backoff = 0.02
""")
    dlf = DeadLetterFile(ws.state, "echo")
    dlf.append(_letter("echo", ["a1", "a2"]))
    res = _cli(ws, "replay", "--sink", "echo")
    assert res.returncode == 1, res.stdout + res.stderr
    assert [letter.error for letter in dlf.read()] == ["receiver answered 401: unknown key ***"]
    assert key not in dlf.path.read_text() + res.stdout + res.stderr


def test_a_second_replay_of_the_same_sink_waits_for_none_and_removes_nothing(ws):
    """While one replay runs, another of the same sink stops at once (exit 1) without
    touching the file: two replays removing letters by count would drop the letters the
    daemon wrote meanwhile. Once the first is done, a replay delivers them."""
    out, dlf = _flaky(ws)
    for n in range(3):
        dlf.append(_letter("flaky", [f"r{n}"]))
    before = dlf.path.read_bytes()
    with dlf.replaying():  # the replay already running
        res = _cli(ws, "replay", "--sink", "flaky")
    assert res.returncode == 1
    assert "another `dlq replay` of flaky is running" in res.stderr
    assert dlf.path.read_bytes() == before
    res = _cli(ws, "replay", "--sink", "flaky")
    assert res.returncode == 0, res.stderr
    assert read_jsonl_ids(out) == ["r0", "r1", "r2"] and _ids(dlf) == []


def _org_letter(sink: str, events: list[tuple[str, str | None]]) -> DeadLetter:
    letter = _letter(sink, [i for i, _ in events])
    for event, (_, org) in zip(letter.events, events, strict=True):
        if org is not None:
            event["organization"] = {"slug": org}
    return letter


def test_replay_sends_only_the_sinks_current_organizations_and_keeps_the_rest(ws):
    """The sink took acme and globex when these letters were written; acme was then
    offboarded (organizations = ["globex"]). Replay sends globex's events only; acme's
    and those without an organization stay in the file, unchanged, and are counted."""
    out, dlf = _flaky(ws, extra='organizations = ["globex"]')
    dlf.append(_org_letter("flaky", [("a1", "acme"), ("g1", "globex"), ("n1", None),
                                     ("g2", "globex")]))
    dlf.append(_org_letter("flaky", [("a2", "acme")]))
    dlf.append(_org_letter("flaky", [("g3", "globex")]))
    res = _cli(ws, "replay", "--sink", "flaky", "--json")
    assert res.returncode == 1, res.stderr
    row = json.loads(res.stdout.splitlines()[-1])
    assert {k: row[k] for k in ("replayed", "records_replayed", "still_dead_lettered",
                                "out_of_scope")} == {
        "replayed": 3, "records_replayed": 1, "still_dead_lettered": 3, "out_of_scope": 3}
    assert "3 of them not sent: their organization is not one of the sink's (globex)" \
        in res.stderr
    assert read_jsonl_ids(out) == ["g1", "g2", "g3"]
    kept = dlf.read()
    assert [[e["id"] for e in x.events] for x in kept] == [["a1", "n1"], ["a2"]]
    assert all(x.error == "earlier failure" and x.attempts == 1 for x in kept)
    # Once acme is back in the sink's scope, its letters go out; the event without an
    # organization still never reaches a scoped sink.
    _flaky(ws, extra='organizations = ["acme", "globex"]')
    res = _cli(ws, "replay", "--sink", "flaky")
    assert res.returncode == 1
    assert read_jsonl_ids(out) == ["g1", "g2", "g3", "a1", "a2"]
    assert _ids(dlf) == [["n1"]]


def test_replay_keeps_events_whose_organization_the_letter_does_not_show(ws):
    """A scoped sink whose redaction drops organization.slug: its letters cannot show an
    event's organization, so none is sent again (no other organization's event can slip
    through); an unscoped sink with the same letters sends them all."""
    out, dlf = _flaky(ws, extra='organizations = ["acme"]\n[sinks.redaction]\nallow = ["action"]')
    dlf.append(_letter("flaky", ["x1", "x2"]))
    before = dlf.path.read_bytes()
    res = _cli(ws, "replay", "--sink", "flaky", "--json")
    assert res.returncode == 1
    assert json.loads(res.stdout.splitlines()[-1])["out_of_scope"] == 2
    assert dlf.path.read_bytes() == before and read_jsonl_ids(out) == []
    _flaky(ws)
    res = _cli(ws, "replay", "--sink", "flaky")
    assert res.returncode == 0, res.stderr
    assert read_jsonl_ids(out) == ["x1", "x2"] and _ids(dlf) == []


_INTERNAL = "usr_01HZX8K2M3N4P5Q6R7S8T9V0U9"


@pytest.mark.parametrize("fmt", ["native", "ecs"])
def test_replay_sends_letters_as_the_sinks_current_redaction_lets_them_out(ws, fmt):
    """Letters written while the sink's policy let more out (actor.id, metadata whole:
    say an allow_looser override since removed) are redacted again by the policy the
    sink has now: the internal id is in no byte the sink receives. A letter the current
    policy leaves as it is goes out as the line it kept, byte for byte."""
    out = ws.root / "out.jsonl"
    ws.write_config(f"""
[[sinks]]
name = "files"
type = "file"
path = "{out}"
format = "{fmt}"
""")
    dlf = DeadLetterFile(ws.state, "files")
    loose = _letter("files", ["l1", "l2"])
    for event in loose.events:
        event["actor"] = {"id": _INTERNAL, "email": "ada@acme.com"}
        event["metadata"] = {"user_id": _INTERNAL, "plan": "pro", "note": f"by {_INTERNAL}"}
    kept_line = json.dumps({"id": "k1", "action": "user.invited", "marker": "as kept"})
    strict = _letter("files", ["k1"])
    if fmt != "native":
        loose.lines = [json.dumps(e) for e in loose.events]
        strict.lines = [kept_line]
    dlf.append(loose)
    dlf.append(strict)
    res = _cli(ws, "replay", "--sink", "files")
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    assert _INTERNAL.encode() not in data and b"01HZX8K2M3N4P5Q6R7S8T9V0U9" not in data
    assert b"ada@acme.com" in data and b'"pro"' in data
    if fmt != "native":
        assert data.splitlines()[-1] == kept_line.encode()
    assert _ids(dlf) == []
