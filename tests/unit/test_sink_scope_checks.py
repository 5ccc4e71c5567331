"""A sink's scope keys are checked before anything runs: ``organizations = []`` (which
would otherwise match every organization) is refused, in the main config and in a stream
file, and a ``start_at`` time of the right shape but no real instant (February 30, hour
25) is refused instead of meaning "the beginning". Each error names the file, line and
key."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditshipd.errors import ConfigError
from auditshipd.service.loading import load_runtime

SINK = '[[sinks]]\nname = "{name}"\ntype = "file"\npath = "{name}.jsonl"\n{extra}\n'


def _errors(tmp_path: Path, text: str) -> list[ConfigError]:
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\nstate_dir = "{tmp_path / "state"}"\n' + text)
    with pytest.raises(ConfigError) as caught:
        load_runtime(config)
    return list(getattr(caught.value, "errors", [caught.value]))


def test_an_empty_organizations_list_is_refused_with_its_line(tmp_path: Path) -> None:
    text = SINK.format(name="none", extra="organizations = []")
    text += SINK.format(name="acme", extra='organizations = ["acme"]')
    (err,) = _errors(tmp_path, text)
    assert err.key == "sinks[0] (none).organizations"
    assert err.line == 7 and err.file == str(tmp_path / "auditshipd.toml")
    assert "an empty list would match no organization" in err.reason
    assert "remove the key for every organization" in err.reason


def test_an_empty_organizations_list_in_a_stream_file_is_refused(tmp_path: Path) -> None:
    """The file is rejected (its sinks do not run); the other sinks load."""
    streams = tmp_path / "streams"
    streams.mkdir()
    (streams / "acme.toml").write_text(SINK.format(name="siem", extra="organizations = []"))
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'streams_dir = "{streams}"\n[journal]\nstate_dir = "{tmp_path}"\n'
                      + SINK.format(name="all", extra=""))
    loaded, _, _ = load_runtime(config)
    assert [sc.name for sc in loaded.sinks] == ["all"]
    (err,) = loaded.stream_errors.values()
    assert err.file == str(streams / "acme.toml") and err.line == 5
    assert err.key == "sinks[0].organizations"


@pytest.mark.parametrize("when", ["2026-02-30T00:00:00Z", "2026-05-01T25:61:00Z",
                                  "2026-13-01T00:00:00Z", "2026-04-31T12:00:00+02:00"])
def test_a_start_at_time_that_does_not_exist_is_refused(tmp_path: Path, when: str) -> None:
    (err,) = _errors(tmp_path, SINK.format(name="acme", extra=f'start_at = "{when}"'))
    assert err.key == "sinks[0] (acme).start_at" and err.line == 7
    assert "no such date or time" in err.reason


@pytest.mark.parametrize("when", ["2024-02-29T00:00:00Z", "2026-05-01T23:59:59.250+05:30",
                                  "beginning", "end"])
def test_real_start_at_times_and_the_words_pass(tmp_path: Path, when: str) -> None:
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'[journal]\nstate_dir = "{tmp_path / "state"}"\n'
                      + SINK.format(name="acme", extra=f'start_at = "{when}"'))
    loaded, _, _ = load_runtime(config)
    assert loaded.sink("acme").start_at == when


def test_a_stream_file_cannot_loosen_the_redaction(tmp_path: Path) -> None:
    """allow_looser is the main config's to give: in a stream file it rejects the file
    (the organization's sinks do not run with a looser policy); a stricter table loads."""
    streams = tmp_path / "streams"
    streams.mkdir()
    looser = '[sinks.redaction]\nallow = ["*"]\nallow_looser = true\n'
    (streams / "acme.toml").write_text(SINK.format(name="siem", extra=looser))
    stricter = '[sinks.redaction]\naction = "drop"\n'
    (streams / "globex.toml").write_text(SINK.format(name="siem", extra=stricter))
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'streams_dir = "{streams}"\n[journal]\nstate_dir = "{tmp_path}"\n'
                      + SINK.format(name="all", extra=looser))
    loaded, _, _ = load_runtime(config)
    assert [sc.name for sc in loaded.sinks] == ["all", "globex.siem"]
    (err,) = loaded.stream_errors.values()
    assert err.file == str(streams / "acme.toml") and err.line == 7
    assert err.key == "sinks[0].redaction.allow_looser"
    assert "only be stricter" in err.reason


def test_a_stream_file_looser_than_the_redaction_rejects_that_file_only(tmp_path: Path) -> None:
    """A stream file's sink that allows what the daemon's [redaction] treats as an id:
    that file is rejected with its own path, line and key (not the main config's, and
    without the allow_looser hint it may not follow); the daemon and the other
    organizations' files load."""
    streams = tmp_path / "streams"
    streams.mkdir()
    looser = '[sinks.redaction]\nallow = ["metadata.internal_db_id"]\n'
    (streams / "acme.toml").write_text(SINK.format(name="ok", extra="")
                                       + SINK.format(name="siem", extra=looser))
    stricter = '[sinks.redaction]\nallow = ["actor.email"]\n'
    (streams / "globex.toml").write_text(SINK.format(name="siem", extra=stricter))
    config = tmp_path / "auditshipd.toml"
    config.write_text(f'streams_dir = "{streams}"\n[journal]\nstate_dir = "{tmp_path}"\n'
                      + SINK.format(name="all", extra=""))
    loaded, _, _ = load_runtime(config)
    assert [sc.name for sc in loaded.sinks] == ["all", "globex.siem"]
    (err,) = loaded.stream_errors.values()
    assert (err.file, err.line, err.key) == (str(streams / "acme.toml"), 11,
                                             "sinks[1].redaction.allow[0]")
    assert "treats as an id" in err.reason and "allow_looser" not in err.reason
