"""A state dir that fills up for real: a small tmpfs mounted on it, filled to ENOSPC,
and what the daemon reports about it (status, metrics, temp files left)."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def mount_small_state_dir(ws: Any) -> Iterator[Path]:
    """ws.state mounted as a 1 MiB tmpfs while the generator runs, unmounted afterwards.
    Mounting needs root (CI runs as root): without it the test fails and says why."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs as the state dir to get a real ENOSPC:"
                    " it needs root (CAP_SYS_ADMIN); run it as root, as CI does")
    ws.state.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs",
                          str(ws.state)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs on {ws.state} (needed for a real ENOSPC):"
                    f" {res.stderr.strip()}")
    try:
        yield ws.state
    finally:
        subprocess.run(["umount", "-l", str(ws.state)], check=False)


def fill(directory: Path) -> Path:
    """Write (append to) a file until the filesystem refuses more (ENOSPC)."""
    filler = directory / "filler"
    block = b"\0" * 4096
    with open(filler, "ab", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return filler


def status_row(ws: Any) -> dict:
    """The first sink's row of ``auditshipd status --json``."""
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "status", "--json", "-c",
                          str(ws.config)], capture_output=True, text=True, cwd=ws.root)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["sinks"][0]


def metric(ws: Any, name: str, sink: str) -> float:
    """A sink's sample of a metric, read from the daemon's /metrics (0 when absent)."""
    port = re.search(r'listen = "127\.0\.0\.1:(\d+)"', ws.config.read_text()).group(1)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf'^{name}{{sink="{sink}"}} ([0-9.e+]+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


def temp_files(state: Path) -> list[Path]:
    """Temp files of interrupted atomic writes left in the state dir."""
    return [p for p in state.rglob("*") if ".tmp." in p.name]
