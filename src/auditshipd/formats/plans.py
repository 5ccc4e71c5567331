"""What the fast encoders precompute per action, kept in a bounded cache.

The class, activity, type, severity and status of an event (and so the first bytes of
its OCSF document, its ECS ``event`` object, its CEF header) depend on the action
string only: they are encoded once per action. Actions come from the input, so the
cache is bounded in entries and in bytes (a stream of distinct, long action names
cannot grow it past ``max_bytes``); when full it starts again empty.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Generic, TypeVar

__all__ = ["BytesCache", "PlanCache"]

P = TypeVar("P")

# What one entry costs beyond its action string (the plan's constant bytes, the dict slot).
_ENTRY_OVERHEAD = 512
_PIECE_OVERHEAD = 200


class PlanCache(Generic[P]):
    """action -> plan, built by ``build`` on first use. Hot loops read ``map`` directly
    (``map.get(action) or cache.get(action)``)."""

    __slots__ = ("_build", "map", "_bytes", "max_entries", "max_bytes")

    def __init__(self, build: Callable[[str], P], *, max_entries: int = 4096,
                 max_bytes: int = 4 << 20):
        self._build = build
        self.map: dict[str, P] = {}
        self._bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self.map)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, action: str) -> P:
        plan = self.map.get(action)
        if plan is None:
            plan = self._build(action)
            # A plan holds its action a few times over (message, event_code, header).
            cost = 4 * len(action) + _ENTRY_OVERHEAD
            if cost <= self.max_bytes:
                if len(self.map) >= self.max_entries or self._bytes + cost > self.max_bytes:
                    self.map.clear()
                    self._bytes = 0
                self.map[action] = plan
                self._bytes += cost
        return plan


V = TypeVar("V")


class BytesCache(Generic[V]):
    """An object's raw JSON bytes -> what a format writes for it, built by ``build`` on a
    miss. Bounded in entries and in bytes (the keys are input): when full, the older half
    goes (insertion order), so a working set larger than the cache still hits in
    proportion. Hot loops read ``map`` directly (``map.get(key, MISS)``), then ``fill``."""

    __slots__ = ("_build", "map", "_bytes", "max_entries", "max_bytes")

    def __init__(self, build: Callable[[bytes], V], *, max_entries: int = 16384,
                 max_bytes: int = 2 << 20):
        self._build = build
        self.map: dict[bytes, V] = {}
        self._bytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self.map)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @staticmethod
    def _cost(key: bytes) -> int:
        # The key, the pieces written from it (its strings, already JSON-escaped, again),
        # the objects holding them and the dict slot.
        return 3 * len(key) + _PIECE_OVERHEAD

    def fill(self, key: bytes) -> V:
        value = self._build(key)
        cost = self._cost(key)
        if cost <= self.max_bytes // 4:
            m = self.map
            if len(m) >= self.max_entries or self._bytes + cost > self.max_bytes:
                old = list(islice(m, len(m) // 2 + 1))
                for k in old:
                    m.pop(k, None)
                self._bytes -= sum(map(self._cost, old))
            m[key] = value
            self._bytes += cost
        return value
