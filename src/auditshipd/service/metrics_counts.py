"""The counts of the sink drivers a daemon replaced (a reload changing a sink, a crash):
added to the live driver's in ``/metrics``, so a sink's counters never go backwards while
the process runs. A sink removed from the config is forgotten: its series leave
``/metrics`` at the next scrape."""

from __future__ import annotations

from typing import Any

__all__ = ["COUNTED", "RetiredCounts"]

# The SinkStats fields exported as Prometheus counters.
COUNTED = ("read_events", "delivered", "retries", "dead_lettered", "quarantined",
           "persist_errors")


class RetiredCounts:
    """Sink name -> the sums of :data:`COUNTED` over its drivers that stopped."""

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, int]] = {}

    def add(self, name: str, driver: Any) -> None:
        """Fold the final counts of ``driver`` (stopped, or dead) into ``name``'s."""
        sync = getattr(driver, "sync_stats", None)
        if sync is not None:
            sync()
        stats = getattr(driver, "stats", None)
        if stats is None:
            return
        totals = self.totals.setdefault(name, dict.fromkeys(COUNTED, 0))
        for attr in COUNTED:
            totals[attr] += int(getattr(stats, attr, 0))

    def keep_only(self, names: set[str]) -> None:
        """Forget the sinks not in ``names`` (removed from the config): their series leave
        ``/metrics``, and a sink added again later under the same name counts from zero."""
        for name in [n for n in self.totals if n not in names]:
            del self.totals[name]

    def of(self, name: str, attr: str) -> int:
        return self.totals.get(name, {}).get(attr, 0)
