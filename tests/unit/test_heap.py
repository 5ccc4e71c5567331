"""The daemon's collector settings: long-lived objects are frozen out of collections
after start-up, and a later settle (after a reload) still collects the cycles the old
configuration left, instead of keeping them frozen forever."""

from __future__ import annotations

import gc
import weakref

from auditshipd.service import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_settle_freezes_and_a_later_settle_frees_old_cycles() -> None:
    """A cycle alive at the first settle is frozen; dropped before the second settle, it
    is collected by it."""
    saved = gc.get_threshold()
    try:
        heap.tune()
        assert gc.get_threshold()[0] == heap._GEN0
        node = _Node()
        gone = weakref.ref(node)
        heap.settle()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert gone() is not None  # frozen: full collections do not see it
        heap.settle()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)
