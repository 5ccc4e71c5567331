"""A sink's health in its status: errors, and the recovery that clears them.

Every failed attempt (a retry, a start that failed, a dead-lettered batch, a blocked
dead-letter or quarantine file) is recorded with :meth:`Health.error`; the first
delivered batch after failures logs one info line ("sink X recovered after N failed
attempts / Ts"), puts the sink back in state ``active`` and marks its last error
resolved (``last_error_resolved_at``), so ``auditshipd status`` no longer reports it as
current.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ..scrub import scrub_secrets
from ..timestamps import epoch_rfc3339, now_rfc3339
from .status import SinkStats

__all__ = ["Health"]


class Health:
    """Errors and recoveries of one sink, written into its :class:`SinkStats`."""

    def __init__(self, name: str, stats: SinkStats, logger: logging.Logger,
                 secrets: Sequence[str] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.stats = stats
        self.logger = logger
        self.secrets = list(secrets)
        self.clock = clock
        self.failures = 0  # failed attempts since the last success
        self._first_failure = 0.0
        # Wall-clock time of the last delivered batch; written into the stats as text
        # by :meth:`sync` (when they are read), not once per batch.
        self._last_success = 0.0
        self._synced_success = 0.0

    def error(self, message: str) -> None:
        """A failed attempt: state ``error``, the (scrubbed) message as last error."""
        message = scrub_secrets(message, self.secrets) or ""
        if self.failures == 0:
            self._first_failure = self.clock()
        self.failures += 1
        self.stats.last_error = message
        self.stats.last_error_at = now_rfc3339()
        self.stats.last_error_resolved_at = None
        self.stats.state = "error"
        self.logger.warning("%s: %s", self.name, message)

    def success(self, events: int) -> None:
        """A delivered batch of ``events``: back to ``active``; after failures, say so."""
        self.stats.delivered += events
        self._last_success = time.time()
        if self.stats.state in ("error", "blocked", "starting"):
            self.stats.state = "active"
        self._recovered()

    def sync(self) -> None:
        """Bring ``last_success_at`` up to date (before the stats are written or read)."""
        if self._last_success != self._synced_success:
            self._synced_success = self._last_success
            self.stats.last_success_at = epoch_rfc3339(self._last_success)

    def started(self) -> None:
        """The sink started: state ``active``; after failed starts, say so."""
        self.stats.state = "active"
        self._recovered()

    def _recovered(self) -> None:
        if not self.failures:
            return
        elapsed = self.clock() - self._first_failure
        self.logger.info("sink %s recovered after %d failed attempt%s / %.1fs", self.name,
                         self.failures, "" if self.failures == 1 else "s", elapsed)
        self.failures = 0
        if self.stats.last_error is not None:
            self.stats.last_error_resolved_at = now_rfc3339()
