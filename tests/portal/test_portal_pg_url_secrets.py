"""A PostgreSQL portal database URL whose password holds a reserved character left
unencoded ('/', '#', '?', '@', an '&' in ``?password=``): no piece of the password
reaches check-config, ``portal migrate``, the token commands, ``status``, the daemon's
log and status files, or the self-service streams' message. A password with a '%' that
starts no escape, or with its reserved characters percent-encoded, still works."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.servers.postgres import create_schema, migrated_schema_sync

from auditshipd import AuditJournal
from auditshipd.cli import main
from auditshipd.config import parse_config
from auditshipd.service import store_streams
from auditshipd.service.store_streams import StoreStreams

SECRET = "Pw9xLongSecretPart"
LEAKY = {
    "slash": f"postgresql://app:{SECRET}/k2@127.0.0.1:5432/db",
    "digits-slash": f"postgresql://app:2024/{SECRET}@127.0.0.1:5432/db",
    "hash": f"postgresql://app:{SECRET}#k2@127.0.0.1:5432/db",
    "question": f"postgresql://app:12?{SECRET}@127.0.0.1:5432/db",
    "at": f"postgresql://app:ab@cd:{SECRET}@127.0.0.1:5432/db",
    "query-amp": f"postgresql://127.0.0.1:5432/db?user=app&password=a&{SECRET}",
}


def _config(tmp: Path, database: str, sink: bool = True) -> Path:
    (tmp / "j").mkdir(exist_ok=True)
    path = tmp / "auditshipd.toml"
    path.write_text(
        f'[journal]\npath = "{tmp}/j/audit.jsonl"\nstate_dir = "{tmp}/state"\npoll_interval = 0.2\n'
        f'[metrics]\nlisten = "127.0.0.1:0"\n'
        f'[portal]\nenabled = false\nretention_days = 0\ndatabase = "{database}"\n'
        + ('[[sinks]]\nname = "portal"\ntype = "portal"\n'
           '[sinks.retry]\ninitial_backoff = 0.1\nmax_backoff = 0.5\n' if sink else ""))
    return path


def _cli(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out + err


def _with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    rest = url.split(parts.netloc, 1)[1]
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{user}:{password}@{host}{rest}"


def _everything_written(root: Path) -> str:
    """Every file under ``root`` but the config file."""
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*")
                     if p.is_file() and p.suffix != ".toml")


@pytest.mark.parametrize("url", LEAKY.values(), ids=LEAKY.keys())
def test_no_command_names_a_piece_of_the_password(
    tmp_path: Path, url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    config = str(_config(tmp_path, url))
    for argv in (["check-config"], ["portal", "migrate"], ["token", "list"], ["status"]):
        code, said = _cli(capfd, *argv, "-c", config)
        assert code != 0, (argv, said)
        assert "not a valid PostgreSQL URL (percent-encode reserved characters" in said, said
        assert SECRET not in said, (argv, said)


@pytest.mark.parametrize("name", ["slash", "query-amp"])
def test_the_daemon_refuses_the_url_without_quoting_it(tmp_path: Path, name: str) -> None:
    config = _config(tmp_path, LEAKY[name])
    done = subprocess.run([sys.executable, "-m", "auditshipd.cli", "run", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "portal.database: not a valid PostgreSQL URL" in done.stderr, done.stderr
    assert SECRET not in done.stdout + done.stderr + _everything_written(tmp_path)


@pytest.mark.parametrize("url", LEAKY.values(), ids=LEAKY.keys())
async def test_self_service_streams_say_a_fixed_sentence(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever URL reaches the daemon's stream reader, its message quotes none of it."""
    config = parse_config(f'[journal]\npath = "{tmp_path}/audit.jsonl"\n', str(tmp_path / "a.toml"))
    monkeypatch.setattr(store_streams, "_database", lambda _config: url)
    streams = StoreStreams()
    assert not await streams.open(config)
    assert streams.problem is not None and "cannot be opened" in streams.problem
    assert SECRET not in streams.problem


def test_a_daemon_whose_login_fails_keeps_the_password_out_of_logs_and_status(
    tmp_path: Path, pg_database: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A clean URL whose role the server does not know: the portal sink and the
    self-service streams report the server's answer; the log, the status files and
    ``auditshipd status`` hold no piece of the password."""
    url = _with_password(pg_database, "no_such_role_x7", f"{SECRET}%2F%23%3F%40%zz")
    config = _config(tmp_path, url)
    with subprocess.Popen([sys.executable, "-m", "auditshipd.cli", "run", "-c", str(config)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        try:
            status = tmp_path / "state" / "status" / "portal.json"
            deadline = time.monotonic() + 60
            while not status.exists() or "does not exist" not in status.read_text():
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        finally:
            proc.terminate()
            log = proc.communicate(timeout=60)[0].decode()
    assert "portal database unavailable" in log or "cannot open the portal database" in log, log
    assert "self-service streams unavailable" in log, log
    code, said = _cli(capfd, "status", "-c", str(config))
    assert "does not exist" in said, said
    for text in (log, said, _everything_written(tmp_path)):
        assert SECRET not in text and "%2F%23" not in text


def test_a_password_with_percent_and_encoded_reserved_characters_works(
    tmp_path: Path, pg_database: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """'%' not starting an escape, and '/', '#', '?', '@' percent-encoded: the URL is
    accepted, migrate and the token commands use it, the daemon ships through it (the
    server trusts the login: the password is read, not checked), nothing quotes it."""
    password = f"50%{SECRET}%2F%23%3F%40"
    url = _with_password(create_schema(pg_database), "postgres", password)
    config = str(_config(tmp_path, url))
    code, said = _cli(capfd, "check-config", "-c", config)
    assert code == 0, said
    code, said = _cli(capfd, "portal", "migrate", "-c", config)
    assert code == 0 and "applied migrations" in said, said
    code, said = _cli(capfd, "token", "create", "-c", config, "--name", "ops", "--role", "admin")
    assert code == 0, said
    code, listed = _cli(capfd, "token", "list", "-c", config)
    assert code == 0 and "ops" in listed, listed
    assert SECRET not in said + listed
    journal = AuditJournal(tmp_path / "j" / "audit.jsonl")
    for i in range(20):
        journal.record("user.login", id=f"pct-{i}", actor={"type": "user", "email": "a@b.example"})
    journal.close()
    from auditshipd.testing import DaemonProcess

    with DaemonProcess(config, tmp_path) as daemon:
        daemon.wait_started()
        deadline = time.monotonic() + 60
        while _stored(url) < 20:
            assert time.monotonic() < deadline, daemon.log()[-3000:]
            time.sleep(0.2)
    assert SECRET.encode() not in daemon.log()


def _stored(url: str) -> int:
    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await conn.close()

    return asyncio.run(count())


def test_a_migrated_schema_url_is_clean(pg_database: str) -> None:
    """The test servers' URLs (a search_path query) are accepted as they are."""
    from auditshipd.portal.config import check_database

    url = migrated_schema_sync(pg_database)
    assert check_database(url) == (url, None)
