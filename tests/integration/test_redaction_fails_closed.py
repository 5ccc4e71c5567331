"""Redaction fails closed: if it cannot be imported, nothing is shipped and the daemon stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditshipd.testing import read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration

# Loaded by the child interpreter before anything else: the redaction module then fails
# to import, as it would from a broken install or a missing compiled part.
POISON = "import sys\nsys.modules['auditshipd.redaction.redactor'] = None\n"


def _poisoned_env(tmp: Path) -> dict[str, str]:
    site = tmp / "poison"
    site.mkdir()
    (site / "sitecustomize.py").write_text(POISON)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def _file_sink(ws) -> None:
    ws.write_config(f"""
[[sinks]]
name = "out"
type = "file"
path = "{ws.out}"
""")


def test_daemon_with_unimportable_redaction_ships_nothing_and_stops(ws):
    """Redaction unimportable: the daemon exits non-zero with a clear error, and the
    events already in the journal never reach the sink."""
    _file_sink(ws)
    write_events(ws.journal, "ev", 20)
    d = ws.daemon(env=_poisoned_env(ws.root))
    with d:
        wait_for(lambda: d.poll() is not None, 30, message="the daemon to stop")
        log = d.log().decode(errors="replace")
        assert d.poll() == 2, log
    assert "redaction is unavailable" in log
    assert "never shipped unredacted" in log
    assert read_jsonl_ids(ws.out) == []
    assert not ws.out.exists()


def test_check_config_with_unimportable_redaction_fails(ws):
    """check-config refuses a config whose redaction cannot be built, naming the key."""
    _file_sink(ws)
    env = {**os.environ, **_poisoned_env(ws.root)}
    r = subprocess.run([sys.executable, "-m", "auditshipd.cli", "check-config", "-c",
                        str(ws.config)], env=env, cwd=ws.root, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{ws.config}: redaction: redaction is unavailable" in r.stderr
