"""Exponential backoff with full jitter, honouring the receiver's Retry-After."""

from __future__ import annotations

import random

from .config import RetryConfig

__all__ = ["Backoff"]


class Backoff:
    __slots__ = ("cfg", "_rand")

    def __init__(self, cfg: RetryConfig, rand: random.Random | None = None):
        self.cfg = cfg
        self._rand = rand or random.Random()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed)."""
        cap = min(self.cfg.max_backoff, self.cfg.initial_backoff * (2 ** min(attempt - 1, 32)))
        delay = self._rand.uniform(0, cap)
        if retry_after is not None:
            delay = max(delay, min(retry_after, max(self.cfg.max_backoff, 300.0)))
        return delay

    def exhausted(self, attempts: int, elapsed: float) -> bool:
        if self.cfg.max_attempts and attempts >= self.cfg.max_attempts:
            return True
        return bool(self.cfg.max_elapsed and elapsed >= self.cfg.max_elapsed)
