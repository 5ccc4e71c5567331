"""free_port hands out ports a server can bind: each once per process, and below the
kernel's range for outgoing connections, whose ports any client connection may take
before the server binds them."""

from __future__ import annotations

import socket

from auditshipd import testing
from auditshipd.testing import _ephemeral_start, free_port


def test_ports_are_distinct_bindable_and_below_the_outgoing_range() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(p < _ephemeral_start() for p in ports)
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_skipped(monkeypatch) -> None:
    """The random pick lands on a port a server listens on: the next pick is taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        other = free_port()
        picks = iter([busy, other])

        class Picks:
            def randrange(self, low: int, high: int) -> int:
                return next(picks)

        monkeypatch.setattr(testing.random, "SystemRandom", Picks)
        testing._GIVEN.discard(other)
        assert testing.free_port() == other
