"""Leak checks of the C extensions: memory still allocated after many more calls."""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable

__all__ = ["assert_no_leak", "traced_growth"]


def traced_growth(run: Callable[[], object], rounds: int, warmup: int = 20) -> int:
    """Bytes still allocated (tracemalloc, which sees PyMem) after ``rounds`` more calls
    of ``run`` than a warm-up of ``warmup`` calls left."""
    for _ in range(warmup):
        run()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(rounds):
            run()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def assert_no_leak(run: Callable[[], object], held: list[object], rounds: int = 2000) -> None:
    """After 50 warm-up calls of ``run``, ``rounds`` more leave under 64 KiB allocated
    and no reference added to (or taken from) any object of ``held``."""
    for _ in range(50):
        run()
    refs = [sys.getrefcount(x) for x in held]
    growth = traced_growth(run, rounds, warmup=0)
    assert growth < 64 << 10, growth
    assert [sys.getrefcount(x) for x in held] == refs
