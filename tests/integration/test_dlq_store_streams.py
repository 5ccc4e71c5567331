"""Dead letters of an organization's self-service stream (saved in the portal's store, not
in the config): ``dlq list`` shows them, ``dlq replay --sink ORG.NAME`` sends them with
the stream's decrypted secrets and through its destination policy, as the daemon would;
a paused stream, one that cannot run here and an unknown name are refused with the reason."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.store_streams import KEY, WHEN, host_config, http_definition, save_definitions

from auditshipd.delivery.batch import Batch
from auditshipd.delivery.deadletters import DeadLetterFile, letter_for
from auditshipd.portal.stream_secrets import ENV_VAR
from auditshipd.testing import WebhookReceiver

pytestmark = pytest.mark.integration

TOKEN = "stream-bearer-77a0c3e1d4"


def _dead_letter(state: Path, sink: str, ids: list[str]) -> DeadLetterFile:
    org = sink.split(".")[0]  # a stream's sink gets its organization's events only
    events = [{"id": i, "action": "user.invited", "occurred_at": WHEN,
               "organization": {"slug": org}} for i in ids]
    dlf = DeadLetterFile(state, sink)
    dlf.append(letter_for(Batch(events), sink=sink, error="receiver answered HTTP 400",
                          retryable=False, attempts=1, first_attempt_at=WHEN,
                          last_attempt_at=WHEN, dead_lettered_at=WHEN))
    return dlf


def _dlq(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "auditshipd.cli", "dlq", *args, "-c", str(config)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, ENV_VAR: KEY})


def test_a_self_service_streams_dead_letters_are_listed_and_replayed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    database = state / "portal.sqlite3"
    allowed = host_config(tmp_path, database, name="allowed.toml")
    default = host_config(tmp_path, database, allow="[]", name="default.toml")
    with WebhookReceiver(bearer_token=TOKEN) as rx, WebhookReceiver() as inside:
        asyncio.run(save_definitions(database, [
            http_definition("acme", "siem", rx.url, TOKEN),
            http_definition("initech", "siem", rx.url, TOKEN, paused=True),
            # a name, not an address: it passes the save-time literal check and
            # resolves to loopback, which only the connection's resolver refuses
            http_definition("globex", "siem", f"http://localhost:{inside.port}/ingest", TOKEN),
        ]))
        acme = _dead_letter(state, "acme.siem", ["a1", "a2"])
        _dead_letter(state, "acme.siem", ["a3"])
        globex = _dead_letter(state, "globex.siem", ["g1"])

        listed = _dlq(allowed, "list")
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line.split()[1:4] for line in listed.stdout.splitlines()[1:]}
        assert rows["acme.siem"][:2] == ["2", "3"] and rows["globex.siem"][:2] == ["1", "1"]
        assert rows["archive"][:2] == ["0", "0"]

        replayed = _dlq(allowed, "replay", "--sink", "acme.siem")
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert sorted(rx.ids()) == ["a1", "a2", "a3"] and rx.rejected_auth == 0
        assert acme.read() == []
        assert TOKEN not in replayed.stdout + replayed.stderr

        paused = _dlq(allowed, "replay", "--sink", "initech.siem")
        assert paused.returncode == 2 and "paused" in paused.stderr, paused.stderr

        unknown = _dlq(allowed, "replay", "--sink", "umbrella.siem")
        assert unknown.returncode == 2 and "no sink named 'umbrella.siem'" in unknown.stderr

        # Without 127.0.0.1 allowed, globex's name resolves to a refused address: the
        # replay fails with the reason, nothing reaches the local receiver, the letter stays.
        refused = _dlq(default, "replay", "--sink", "globex.siem")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "loopback" in refused.stdout + refused.stderr
        assert inside.requests == 0
        assert [e["id"] for letter in globex.read() for e in letter.events] == ["g1"]
        assert TOKEN not in refused.stdout + refused.stderr
