"""systemd's notify protocol: READY=1, STATUS=, WATCHDOG=1, STOPPING=1 on a real socket."""

from __future__ import annotations

import socket
import threading

import pytest

from auditshipd.testing import wait_for

pytestmark = pytest.mark.integration


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except OSError:
                continue

    def lines(self) -> list[str]:
        return [line for m in list(self.messages) for line in m.splitlines()]

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_ready_watchdog_status_stopping(ws):
    """The daemon says READY=1 once up, pings WATCHDOG=1, reports STATUS=, says STOPPING=1."""
    ws.write_config(f"""
[[sinks]]
name = "out"
type = "file"
path = "{ws.out}"
""")
    ns = NotifySocket(ws.root / "notify.sock")
    try:
        d = ws.daemon(env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "400000"})
        with d:
            wait_for(lambda: "READY=1" in ns.lines(), 30, message="READY=1")
            wait_for(lambda: ns.lines().count("WATCHDOG=1") >= 3, 30, message="watchdog pings")
            assert any(x.startswith("STATUS=1 sink(s)") for x in ns.lines())
            assert "STOPPING=1" not in ns.lines()
            assert d.terminate() == 0
        wait_for(lambda: "STOPPING=1" in ns.lines(), 10, message="STOPPING=1")
        lines = ns.lines()
        assert lines.index("READY=1") < lines.index("STOPPING=1")
    finally:
        ns.close()


def test_no_watchdog_for_another_pid(ws):
    """WATCHDOG_PID naming another process: no watchdog pings, READY=1 still sent."""
    ws.write_config(f"""
[[sinks]]
name = "out"
type = "file"
path = "{ws.out}"
""")
    ns = NotifySocket(ws.root / "notify.sock")
    try:
        with ws.daemon(env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "200000",
                            "WATCHDOG_PID": "1"}) as d:
            wait_for(lambda: "READY=1" in ns.lines(), 30, message="READY=1")
            assert d.terminate() == 0
        assert "WATCHDOG=1" not in ns.lines()
    finally:
        ns.close()
