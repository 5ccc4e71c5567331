"""``auditshipd dlq list`` and ``auditshipd dlq replay``.

A replay sends each dead letter through :func:`auditshipd.retry.deliver`, the same
delivery loop as the daemon (accepted prefixes, rejected events, ``attempt_timeout``,
culprit isolation), with at most ``attempts`` attempts per letter. A letter leaves the
file only once every one of its events was delivered; whatever failed stays, in
order, with the new error; any exception (the sink cannot start, a bug, an interrupt)
keeps the letter being sent and all the letters after it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .batch import Batch
from .config import Config
from .deadletter import DeadLetter, DeadLetterFile
from .retry import Backoff, DeliveryFailure, deliver
from .scrub import scrub_secrets
from .sinks.base import SinkContext

__all__ = ["ReplayResult", "dlq_summary", "replay"]

log = logging.getLogger("auditshipd.dlq")


def dlq_summary(config: Config) -> list[dict[str, Any]]:
    rows = []
    for sc in config.sinks:
        f = DeadLetterFile(config.state_dir, sc.name, sc.dead_letter.max_bytes)
        scan = f.scan()
        letters = scan.letters
        rows.append({
            "sink": sc.name, "records": len(letters),
            "events": sum(len(x.events) for x in letters), "bytes": f.size(),
            "oldest": letters[0].dead_lettered_at if letters else None,
            "last_error": letters[-1].error if letters else None,
            "path": str(f.path), "unreadable_lines": scan.unreadable,
        })
    return rows


@dataclass
class ReplayResult:
    """What a replay did: events delivered, events (and letters) still dead-lettered,
    unreadable lines left in the file, and the error that stopped it, if any."""

    sink: str
    path: str
    replayed: int = 0
    still_dead_lettered: int = 0
    letters_kept: int = 0
    unreadable_lines: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.letters_kept and not self.unreadable_lines and self.error is None


def _kept(letter: DeadLetter, failure: DeliveryFailure) -> DeadLetter:
    return DeadLetter(
        sink=letter.sink, error=scrub_secrets(str(failure.error)) or "",
        retryable=failure.error.retryable, attempts=letter.attempts + failure.attempts,
        first_attempt_at=letter.first_attempt_at, last_attempt_at=failure.last_attempt_at,
        dead_lettered_at=letter.dead_lettered_at, events=failure.batch.events)


async def replay(config: Config, sink_name: str, *, attempts: int = 3,
                 progress: Any = None) -> ReplayResult:
    """Send every dead letter of ``sink_name`` through that sink again.

    Delivered events leave the file; failed ones stay (with the new error and attempt
    count), as do letters never tried because an exception stopped the replay.
    """
    sc = config.sink(sink_name)
    assert sc.sink_type is not None
    dlf = DeadLetterFile(config.state_dir, sc.name, sc.dead_letter.max_bytes)
    scan = await asyncio.to_thread(dlf.scan)
    letters = scan.letters
    result = ReplayResult(sink=sc.name, path=str(dlf.path), unreadable_lines=scan.unreadable)
    if not letters:
        return result
    # The sink's own retry settings, but a bounded number of attempts: with
    # max_attempts = 0 (retry forever) a replay against a dead receiver would never end.
    backoff = Backoff(msgspec.structs.replace(sc.retry, max_attempts=attempts))
    keep: list[DeadLetter] = []
    finished = 0  # letters fully handled (delivered, or their failures in ``keep``)
    try:
        context = SinkContext(name=sc.name, state_dir=config.state_dir, logger=log,
                              extra={"journal_path": config.journal.path, "config": config})
        sink = sc.sink_type.build(sc.name, sc.options, context)
        try:
            await sink.start()
            for letter in letters:
                failures: list[DeliveryFailure] = []

                async def failed(f: DeliveryFailure, into: list[DeliveryFailure] = failures
                                 ) -> None:
                    into.append(f)

                sent = await deliver(sink.send, Batch(letter.events), backoff, on_failed=failed)
                keep.extend(_kept(letter, f) for f in failures)
                result.replayed += sent
                finished += 1
                if progress is not None:
                    progress(len(letter.events))
        finally:
            try:
                await sink.close()
            except Exception as exc:
                log.warning("closing sink %s failed: %s", sc.name, scrub_secrets(str(exc)))
    except Exception as exc:
        log.error("replay of %s stopped: %s: %s", sc.name, type(exc).__name__,
                  scrub_secrets(str(exc)))
        result.error = scrub_secrets(f"{type(exc).__name__}: {exc}")
    finally:
        # Letters not finished stay whole, in order, after what failed before them.
        kept = keep + letters[finished:]
        await asyncio.to_thread(dlf.remove_first, len(letters), kept)
        result.letters_kept = len(kept)
        result.still_dead_lettered = sum(len(x.events) for x in kept)
    return result
