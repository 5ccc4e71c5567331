"""Value checks of the whole configuration: every problem of [metrics], [portal] and
[redaction] listed in one run; numbers finite and in range; the portal database either
a SQLite path or a PostgreSQL URL, never another URL taken for a file name."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditshipd.config import parse_config
from auditshipd.errors import ConfigError
from auditshipd.portal.config import is_postgres_url, portal_config
from auditshipd.service.loading import load_runtime

MISTAKES = """\
[portal]
retention_days = -1
purge_interval = 0.0
session_ttl = 0.0
[metrics]
listen = "nope"
ready_stuck_after = 0.0
[redaction]
id_value_patterns = ["("]
allow = ["a[[b"]
[journal]
max_line_bytes = 1
"""


def _errors(tmp_path: Path, text: str) -> list[ConfigError]:
    config = tmp_path / "auditshipd.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_runtime(config)
    return list(getattr(caught.value, "errors", [caught.value]))


def test_every_problem_of_metrics_portal_and_redaction_in_one_run(tmp_path: Path) -> None:
    found = {(e.key, e.line) for e in _errors(tmp_path, MISTAKES)}
    assert found == {
        ("portal.retention_days", 2), ("portal.purge_interval", 3), ("portal.session_ttl", 4),
        ("metrics.listen", 6), ("metrics.ready_stuck_after", 7),
        ("redaction.id_value_patterns[0]", 9), ("redaction.allow[0]", 10),
        ("journal.max_line_bytes", 12),
    }


def test_every_problem_of_a_sinks_redaction_table(tmp_path: Path) -> None:
    text = ('[[sinks]]\nname = "out"\ntype = "file"\npath = "o.jsonl"\n[sinks.redaction]\n'
            'id_value_patterns = ["("]\nallow = ["a[[b"]\n')
    keys = {e.key for e in _errors(tmp_path, text)}
    assert keys == {"sinks[0] (out).redaction.id_value_patterns[0]",
                    "sinks[0] (out).redaction.allow[0]"}


@pytest.mark.parametrize(("table", "key"), [
    ("shutdown_timeout = -5.0", "shutdown_timeout"),
    ("shutdown_timeout = nan", "shutdown_timeout"),
    ("[portal]\nstream_poll_interval = nan", "portal.stream_poll_interval"),
    ("[portal]\npurge_interval = nan", "portal.purge_interval"),
    ("[portal]\nsession_ttl = inf", "portal.session_ttl"),
    ("[journal]\nrotate_wait = nan", "journal.rotate_wait"),
    ("[journal]\npoll_interval = inf", "journal.poll_interval"),
    ("[integrity]\ndigest_interval = nan", "integrity.digest_interval"),
    ("[metrics]\nready_stuck_after = inf", "metrics.ready_stuck_after"),
    ('[[sinks]]\nname = "o"\ntype = "file"\npath = "o.jsonl"\n[sinks.batch]\ntimeout = nan',
     "sinks[0] (o).batch.timeout"),
    ('[[sinks]]\nname = "o"\ntype = "file"\npath = "o.jsonl"\n[sinks.retry]\nmax_elapsed = inf',
     "sinks[0] (o).retry.max_elapsed"),
])
def test_numbers_must_be_finite_and_in_range(tmp_path: Path, table: str, key: str) -> None:
    assert key in {e.key for e in _errors(tmp_path, table + "\n")}


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://auditshipd:S3cretPw@db.internal:5432/audit",
    "mysql://auditshipd:S3cretPw@db.internal/audit",
])
def test_a_database_url_of_another_kind_is_refused_without_its_password(url: str) -> None:
    config = parse_config(f'[portal]\ndatabase = "{url}"\n', "auditshipd.toml")
    with pytest.raises(ConfigError) as caught:
        portal_config(config)
    assert caught.value.key == "portal.database"
    assert "S3cretPw" not in str(caught.value)
    assert "not a database auditshipd can use" in str(caught.value)


def test_the_postgresql_scheme_is_read_in_any_case() -> None:
    url = "PostgreSQL://auditshipd:pw@db.internal:5432/audit"
    assert is_postgres_url(url)
    config = parse_config(f'[portal]\ndatabase = "{url}"\n', "auditshipd.toml")
    assert portal_config(config).database == "postgresql://auditshipd:pw@db.internal:5432/audit"
    assert not is_postgres_url("/var/lib/auditshipd/portal.sqlite3")


def test_a_portal_sinks_own_database_is_checked_as_portal_database_is(tmp_path: Path) -> None:
    """A portal sink's ``database`` option: another kind of URL is refused naming the
    sink's key (never its password), and the PostgreSQL scheme is read in any case."""
    sink = '[[sinks]]\nname = "index"\ntype = "portal"\ndatabase = "{}"\n'
    bad = _errors(tmp_path, sink.format("postgresql+psycopg://a:S3cretPw@db.internal/audit"))
    assert [e.key for e in bad] == ["sinks[0] (index).database"]
    assert "S3cretPw" not in str(bad[0]) and "not a database auditshipd can use" in str(bad[0])
    (tmp_path / "auditshipd.toml").write_text(sink.format("PostgreSQL://a:pw@db.internal/audit"))
    config, _, _ = load_runtime(tmp_path / "auditshipd.toml")
    assert config.sinks[0].options.database == "postgresql://a:pw@db.internal/audit"
