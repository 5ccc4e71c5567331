"""A SIGHUP that arrives while the daemon is still starting does not kill it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from auditshipd.testing import read_jsonl_ids, wait_for, write_events

pytestmark = pytest.mark.integration

# Runs the daemon's own entry point and sends it SIGHUP at the moment it begins importing
# the daemon's modules: after the command line is read, before any handler is installed.
_RUN_WITH_EARLY_HUP = textwrap.dedent("""
    import importlib.abc, os, signal, sys

    class SignalAtImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "auditshipd.service.daemon":
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGHUP)
            return None

    sys.meta_path.insert(0, SignalAtImport())
    from auditshipd.cli import main
    sys.exit(main(["run", "-c", sys.argv[1]]))
""")


def test_sighup_during_start_is_not_fatal(ws):
    ws.write_config(f"""
[[sinks]]
name = "out"
type = "file"
path = "{ws.out}"
""")
    log_path = ws.root / "daemon.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", _RUN_WITH_EARLY_HUP, str(ws.config)],
                                cwd=ws.root, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for(lambda: b"auditshipd started" in log_path.read_bytes() or proc.poll() is not None,
                 30, message="daemon start")
        assert proc.poll() is None, f"daemon died (exit {proc.returncode}):\n{log_path.read_text()}"
        ids = write_events(ws.journal, "hup", 20)
        wait_for(lambda: read_jsonl_ids(ws.out) == ids, 30, message="events delivered")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
