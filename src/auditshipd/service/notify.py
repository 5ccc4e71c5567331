"""systemd's notify protocol (sd_notify), spoken directly over $NOTIFY_SOCKET.

Messages are sent from the event loop, so the socket is non-blocking: a busy or wedged
service manager lets its queue fill up (net.unix.max_dgram_qlen, 10 datagrams by
default), and a blocking ``sendto`` would then freeze the whole daemon, SIGTERM
included. A message that does not fit is dropped and counted: every one of them is a
state (READY, STATUS, WATCHDOG...) that the next message repeats or supersedes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

__all__ = ["SystemdNotifier"]

log = logging.getLogger("auditshipd.notify")


class SystemdNotifier:
    """Sends READY=1, STATUS=..., WATCHDOG=1, STOPPING=1; a no-op outside systemd."""

    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        self._addr: str | None = None
        self.dropped = 0
        if address:
            if address.startswith("@"):
                address = "\0" + address[1:]
            self._addr = address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> None:
        if self._sock is None or self._addr is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self._addr)
        except BlockingIOError:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("the systemd notify socket is full (service manager busy or"
                            " stuck); dropping notifications instead of blocking")
        except OSError:
            pass  # systemd went away; nothing to tell

    def watchdog_interval(self) -> float | None:
        """Half the watchdog timeout systemd asked for, in seconds, or None."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6 / 2
        except ValueError:
            return None

    async def watchdog(self, interval: float) -> None:
        """WATCHDOG=1 from the event loop itself: a wedged loop stops the pings."""
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self.dropped:
            log.warning("%d systemd notification(s) dropped: the notify socket was full",
                        self.dropped)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
