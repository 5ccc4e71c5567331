"""Acceptance: the built wheel, installed into a fresh venv, sets itself up and runs.

Build the wheel from a copy of the source tree (as an sdist would hold it), install it into
a new venv (dependencies from the configured package index), run `auditshipd init` into a
temp dir, check the written unit with `systemd-analyze verify`, then run the daemon on the
written config and deliver one event end to end. Nothing comes from the test's own
environment: the daemon is the installed wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from auditshipd.testing import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
# .cache holds the test servers scripts/test.sh installs (Azurite's node_modules, some
# 200 MB): no part of the source, and copying it took longer than building the wheel.
_NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "var", "__pycache__",
                                     "*.egg-info", "*.so", ".pytest_cache", ".ruff_cache",
                                     ".hypothesis", ".cache", "test-output", "tests", "bench")


# The installed wheel must answer on its own: no PYTHONPATH leading back to a source tree.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run(*cmd: object, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                         timeout=timeout, env=_ENV)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel built from this tree installed in it."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", src)
    (wheel,) = (tmp / "dist").glob("auditshipd-*.whl")
    venv = tmp / "venv"
    # Without a pip of its own (bootstrapping one took as long as the build): this
    # environment's pip installs the wheel and its dependencies into it.
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", wheel)
    return venv


def test_wheel_ships_license_docs_examples_and_the_unit(installed):
    """The installed package carries LICENSE, README, docs, example configs and the unit,
    and --version answers."""
    py = installed / "bin" / "python"
    version = run(installed / "bin" / "auditshipd", "--version").stdout
    assert version.startswith("auditshipd ")
    share = Path(run(py, "-c", "from auditshipd.shipped import shipped_dir; print(shipped_dir())",
                     cwd=installed).stdout.strip())
    assert share.is_relative_to(installed), share
    for name in ("LICENSE", "README.md", "config/auditshipd.toml", "config/redaction.toml",
                 "config/sinks-example.toml", "docs/sinks.md", "docs/redaction.md", "docs/configuration.md",
                 "systemd/auditshipd.service"):
        assert (share / name).read_bytes() == (REPO / name).read_bytes(), name
    (license_file,) = installed.glob("lib/python*/site-packages/auditshipd-*.dist-info/licenses/LICENSE")
    assert "Apache License" in license_file.read_text()


def test_init_then_the_daemon_runs_on_the_written_config(installed, tmp_path):
    """`auditshipd init` into a temp dir writes a unit that systemd-analyze accepts and a
    config the daemon runs on: an emitted event reaches the starter file sink and the
    portal answers."""
    exe = installed / "bin" / "auditshipd"
    portal, metrics = free_port(), free_port()
    etc = tmp_path / "etc"
    out = run(exe, "init", "--dir", etc, "--journal-dir", tmp_path / "journal", "--state-dir",
              tmp_path / "state", "--logs-dir", tmp_path / "logs", "--portal-listen",
              f"127.0.0.1:{portal}", "--metrics-listen", f"127.0.0.1:{metrics}")
    assert "useradd --system" in out.stdout and "systemctl enable --now auditshipd" in out.stdout
    unit = (etc / "auditshipd.service").read_text()
    assert f"ExecStart={exe} run -c {etc}/auditshipd.toml\n" in unit

    # scripts/test.sh installs systemd (systemd-analyze) when it is missing: no skip here.
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd; scripts/test.sh installs it)"
    run(analyze, "verify", etc / "auditshipd.service")

    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([exe, "run", "-c", etc / "auditshipd.toml"], cwd=tmp_path, env=_ENV,
                                stdout=log, stderr=log, start_new_session=True)
    try:
        wait_for(lambda: b"auditshipd started" in log_path.read_bytes() or proc.poll() is not None,
                 60, message="daemon start")
        assert proc.poll() is None, log_path.read_text()
        event_id = run(exe, "emit", "user.invited", "-c", etc / "auditshipd.toml",
                       "--actor-email", "ada@acme.test", "--organization", "acme").stdout.strip()
        shipped = tmp_path / "logs" / "shipped.jsonl"
        wait_for(lambda: shipped.exists() and event_id in shipped.read_text(), 30,
                 message="event delivered to the starter file sink")
        (ev,) = [json.loads(x) for x in shipped.read_text().splitlines()]
        assert ev["id"] == event_id and ev["action"] == "user.invited"
        with urllib.request.urlopen(f"http://127.0.0.1:{portal}/login", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log_path.read_text()


_WITHOUT_C_CHECK = r"""
import sys
import msgspec
from auditshipd.formats import fastpath
from auditshipd.formats.registry import build_encoder
from auditshipd.integrity import chain
from auditshipd.integrity.chain import ChainState, StreamChain
from auditshipd.redaction import ctier
import auditshipd
assert auditshipd.__file__.startswith(sys.argv[1]), auditshipd.__file__
if sys.argv[2] == "python":
    assert fastpath.formats_c() is None and chain.chain_c() is None and ctier._redact_c is None
else:
    assert fastpath.formats_c() is not None and chain.chain_c() is not None
line = msgspec.json.encode({"id": "e1", "action": "user.signed_in",
                            "occurred_at": "2024-05-01T09:00:00.250Z",
                            "actor": {"type": "user", "email": "ada@acme.test"},
                            "context": {"location": "203.0.113.7"}})
for fmt in ("ocsf", "ecs", "cef"):
    sys.stdout.buffer.write(build_encoder(fmt).encode_lines([line])[0] + b"\n")
sys.stdout.buffer.write(StreamChain(ChainState(stream="s")).seal_lines([line])[0] + b"\n")
"""


def test_without_a_c_compiler_the_package_builds_and_runs_on_python(tmp_path):
    """CC=false: the wheel still builds (the three extensions are optional) without any
    compiled module, and, unpacked, it encodes the formats and seals events on its Python
    code: the same bytes as this tree's C extensions write."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE)
    env = {**_ENV, "CC": "false"}
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                          str(tmp_path / "dist"), str(src)], capture_output=True, text=True,
                         timeout=240, env=env)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("auditshipd-*.whl")
    unpacked = tmp_path / "unpacked"
    shutil.unpack_archive(wheel, unpacked, format="zip")
    assert not list(unpacked.rglob("*.so")), list(unpacked.rglob("*.so"))
    py_run = subprocess.run([sys.executable, "-c", _WITHOUT_C_CHECK, str(unpacked), "python"],
                            capture_output=True, timeout=60,
                            env={**_ENV, "PYTHONPATH": str(unpacked)})
    assert py_run.returncode == 0, py_run.stderr.decode()
    c_run = subprocess.run([sys.executable, "-c", _WITHOUT_C_CHECK, str(REPO / "src"), "c"],
                           capture_output=True, timeout=60, env=_ENV)
    assert c_run.returncode == 0, c_run.stderr.decode()
    assert py_run.stdout == c_run.stdout and py_run.stdout.count(b"\n") == 4
