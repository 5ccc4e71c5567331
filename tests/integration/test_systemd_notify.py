"""systemd's notify protocol: READY=1, STATUS=, WATCHDOG=1, STOPPING=1 on a real socket."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time

import pytest

from auditshipd.testing import read_jsonl_ids, wait_for, write_events

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


def test_full_notify_socket_never_blocks_the_daemon(ws):
    """A notify socket that is never read fills up (a wedged service manager): the daemon
    keeps running, applies a reload and exits 0 on SIGTERM within shutdown_timeout."""
    ws.write_config(f"""
[[sinks]]
name = "out"
type = "file"
path = "{ws.out}"
""", shutdown_timeout=5.0)
    path = str(ws.root / "notify.sock")
    wedged = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never read
    wedged.bind(path)
    try:
        # 20 ms watchdog timeout: a ping every 10 ms fills the 10-datagram queue at once.
        d = ws.daemon(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})
        with d:
            d.wait_started()
            wait_for(lambda: _queue_full(path), 30, message="the notify queue to fill up")
            d.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: b"config reloaded" in d.log(), 30, message="the reload")
            ids = write_events(ws.journal, "ev", 5)
            wait_for(lambda: len(read_jsonl_ids(ws.out)) == 5, 30, message="delivery")
            started = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            try:
                rc = d.proc.wait(5.0 + 2.0)
            except subprocess.TimeoutExpired:
                pytest.fail("the daemon did not exit within shutdown_timeout after SIGTERM")
            elapsed = time.monotonic() - started
        log = d.log()
        assert rc == 0, log.decode(errors="replace")
        assert elapsed < 5.0
        assert sorted(read_jsonl_ids(ws.out)) == ids
        assert b"systemd notification(s) dropped" in log
    finally:
        wedged.close()


def _queue_full(path: str) -> bool:
    """Whether a datagram socket's receive queue is full (a non-blocking send fails)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        probe.setblocking(False)
        try:
            probe.sendto(b"probe", path)
        except BlockingIOError:
            return True
    return False
