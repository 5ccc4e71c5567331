"""The `auditshipd redact` subcommand: stdin JSONL in, redacted JSONL out, problems on stderr."""

from __future__ import annotations

import argparse
import io
import sys

import msgspec

from auditshipd.redaction import cli as redact_cli

GOOD = b'{"id":"e1","action":"user.invited","occurred_at":"2024-05-01T00:00:00Z","actor":{"id":"usr_01HZX8K2M3N4P5Q6R7S8T9V0U1","email":"a@acme.com"}}'
NO_ACTION = b'{"id":"e2","occurred_at":"2024-05-01T00:00:00Z"}'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditshipd")
    redact_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser


def _run(monkeypatch, argv: list[str], stdin: bytes) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    fake_stdin = io.TextIOWrapper(io.BytesIO(stdin))
    fake_stdout = io.TextIOWrapper(out)
    monkeypatch.setattr(sys, "stdin", fake_stdin)
    monkeypatch.setattr(sys, "stdout", fake_stdout)
    monkeypatch.setattr(sys, "stderr", err)
    args = _parser().parse_args(argv)
    code = args.func(args)
    return code, out.getvalue(), err.getvalue()


def test_prints_redacted_events(monkeypatch):
    """Valid events come out redacted, one JSON per line, exit 0."""
    code, out, err = _run(monkeypatch, ["redact"], GOOD + b"\n\n" + GOOD + b"\n")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 2
    assert msgspec.json.decode(lines[0]) == {
        "id": "e1", "action": "user.invited", "occurred_at": "2024-05-01T00:00:00Z",
        "actor": {"email": "a@acme.com"},
    }
    assert b"usr_01" not in out


def test_reports_bad_lines_with_numbers(monkeypatch):
    """Invalid JSON and dropped events are reported on stderr by line number; exit 1."""
    code, out, err = _run(monkeypatch, ["redact"], GOOD + b"\n{not json\n" + NO_ACTION + b"\n")
    assert code == 1
    assert len(out.splitlines()) == 1
    assert "line 2: invalid JSON" in err
    assert "line 3: dropped: required field 'action' is missing" in err


def test_an_event_nested_too_deeply_to_redact_is_reported_not_a_traceback(monkeypatch, tmp_path):
    """Free-form data nested 700 lists deep: reported as dropped with its line number,
    the lines after it still redacted; exit 1."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[redaction]\nallow = ["actor.email", "metadata"]\n')
    deep = b'{"id":"e0","action":"a","occurred_at":"t","metadata":[' + b"[" * 700 + b"]" * 700 + b"]}"
    code, out, err = _run(monkeypatch, ["redact", "-c", str(cfg)], deep + b"\n" + GOOD + b"\n")
    assert code == 1
    assert "line 1: dropped: nested too deeply to redact" in err
    assert len(out.splitlines()) == 1 and b"a@acme.com" in out


def test_sink_override_and_config_errors(monkeypatch, tmp_path):
    """--sink applies that sink's stricter policy; a bad policy or unknown sink exits 2."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[redaction]\nallow = ["actor.email", "actor.name"]\n'
        '[[sinks]]\nname = "s"\ntype = "file"\npath = "x"\n[sinks.redaction]\nallow = ["actor.name"]\n'
    )
    code, out, _ = _run(monkeypatch, ["redact", "-c", str(cfg), "--sink", "s"], GOOD + b"\n")
    assert code == 0 and b"a@acme.com" not in out and b"\"actor\":{}" in out
    code, _, err = _run(monkeypatch, ["redact", "-c", str(cfg), "--sink", "nope"], GOOD + b"\n")
    assert code == 2 and "no sink named 'nope'" in err
    cfg.write_text('[redaction]\naction = "erase"\n')
    code, _, err = _run(monkeypatch, ["redact", "-c", str(cfg)], GOOD + b"\n")
    assert code == 2 and "redaction.action" in err and "erase" in err
