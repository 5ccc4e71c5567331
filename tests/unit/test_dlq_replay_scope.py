"""Which events of a dead letter ``dlq replay`` may send: a letter that kept the lines a
formatted sink was handed is split with its lines, each line staying with its event."""

from __future__ import annotations

from pathlib import Path

from auditshipd.delivery.deadletters import DeadLetter
from auditshipd.delivery.replay import _LetterScope, _sink_redactor
from auditshipd.service.loading import load_runtime


def test_a_formatted_letter_is_split_with_its_lines(tmp_path: Path) -> None:
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\nstate_dir = "{tmp_path}"\n[[sinks]]\nname = "s"\n'
                      'type = "file"\npath = "s.jsonl"\norganizations = ["globex"]\n')
    loaded, _, _ = load_runtime(config)
    orgs = ["acme", "globex", "acme", "globex"]
    events = [{"id": f"e{i}", "action": "a", "occurred_at": "2026-01-01T00:00:00Z",
               "organization": {"slug": org}} for i, org in enumerate(orgs)]
    letter = DeadLetter(sink="s", error="x", retryable=False, attempts=1,
                        first_attempt_at="t", last_attempt_at="t", dead_lettered_at="t",
                        events=events, lines=[f"line {i}" for i in range(4)])
    sc = loaded.sink("s")
    send, held = _LetterScope(sc, _sink_redactor(loaded, sc)).split(letter)
    assert send is not None and held is not None
    assert [e["id"] for e in send.events] == ["e1", "e3"] and send.lines == ["line 1", "line 3"]
    assert [e["id"] for e in held.events] == ["e0", "e2"] and held.lines == ["line 0", "line 2"]
    assert held.error == "x" and held.attempts == 1
