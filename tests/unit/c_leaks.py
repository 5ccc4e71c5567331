"""Leak checks of the C extensions: memory still allocated after many more calls."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

__all__ = ["traced_growth"]


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
