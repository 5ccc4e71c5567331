"""Real servers the integration tests start on free ports, and the helpers they share.

A server that cannot start is a test failure (with its stderr), never a skip.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from auditshipd.testing import free_port

__all__ = [
    "ServerProcess",
    "ServerStartError",
    "free_port",
    "port_accepts",
    "wait_port_accepts",
    "wait_port_closed",
]


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries its stderr."""


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _stderr_tail(path: Path | None, limit: int = 4000) -> str:
    if path is None or not path.exists():
        return ""
    return path.read_text("utf-8", errors="replace")[-limit:]


def wait_port_accepts(
    host: str,
    port: int,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    stderr_path: Path | None = None,
    timeout: float = 20.0,
    what: str = "server",
) -> None:
    """Block until ``host:port`` accepts a connection; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(
                f"{what} exited with {proc.returncode} before listening on {port}:\n"
                f"{_stderr_tail(stderr_path)}"
            )
        if port_accepts(host, port):
            return
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"{what} did not listen on {host}:{port} within {timeout}s:\n"
                f"{_stderr_tail(stderr_path)}"
            )
        time.sleep(delay)  # polling a port: there is no event to wait on
        delay = min(delay * 2, 0.1)


def wait_port_closed(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while port_accepts(host, port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{host}:{port} still accepts connections after {timeout}s")
        time.sleep(0.02)


class ServerProcess:
    """Stopping a server the tests started: ``proc`` on ``host``:``port``."""

    host: str
    port: int
    proc: subprocess.Popen[bytes] | None

    def kill(self) -> None:
        """SIGKILL (no graceful shutdown), then wait until the port is free again."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        wait_port_closed(self.host, self.port)

    def stop(self) -> None:
        """SIGTERM; SIGKILL if it does not exit within 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
