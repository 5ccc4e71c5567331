"""The daemon's garbage-collector settings.

Events, batches and chunks are freed by reference counting; the cyclic collector only
finds the rare cycle. By default it runs a young collection every 700 new container
objects, and now and then a full one that walks every object alive: with a thousand
sinks (their drivers, outboxes, options, plugin objects) a full collection costs
hundreds of milliseconds, and routing a journal to them made it spend ~10% of the
daemon's CPU there. After start-up and each reload the objects built so far are moved
out of the collector's sight (``gc.freeze``: they live until the next reload anyway),
and young collections run every :data:`_GEN0` new containers.
"""

from __future__ import annotations

import gc

__all__ = ["settle", "tune"]

_GEN0 = 10_000


def tune() -> None:
    """Collect young objects less often (a batch allocates thousands of them)."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(_GEN0, gen1, gen2)


def settle() -> None:
    """Take the long-lived objects built so far (configuration, sinks) out of later
    collections: they stay until a reload, which settles again (what the old
    configuration left in cycles is collected then)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
