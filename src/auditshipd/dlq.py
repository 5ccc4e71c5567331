"""``auditshipd dlq list`` and ``auditshipd dlq replay``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .batch import Batch
from .config import Config
from .deadletter import DeadLetter, DeadLetterFile, now_rfc3339
from .errors import SinkError
from .retry import Backoff
from .sinks.base import SinkContext

__all__ = ["dlq_summary", "replay"]

log = logging.getLogger("auditshipd.dlq")


def dlq_summary(config: Config) -> list[dict[str, Any]]:
    rows = []
    for sc in config.sinks:
        f = DeadLetterFile(config.state_dir, sc.name, sc.dead_letter.max_bytes)
        letters = f.read()
        rows.append({
            "sink": sc.name, "records": len(letters),
            "events": sum(len(x.events) for x in letters), "bytes": f.size(),
            "oldest": letters[0].dead_lettered_at if letters else None,
            "last_error": letters[-1].error if letters else None,
        })
    return rows


async def replay(config: Config, sink_name: str, *, attempts: int = 3,
                 progress: Any = None) -> tuple[int, int]:
    """Send every dead letter of ``sink_name`` through that sink again.

    Replayed records are removed; failed ones stay (with the new error and attempt
    count). Returns (events replayed, events still dead-lettered).
    """
    sc = config.sink(sink_name)
    assert sc.sink_type is not None
    dlf = DeadLetterFile(config.state_dir, sc.name, sc.dead_letter.max_bytes)
    letters = await asyncio.to_thread(dlf.read)
    if not letters:
        return 0, 0
    context = SinkContext(name=sc.name, state_dir=config.state_dir, logger=log,
                          extra={"journal_path": config.journal.path, "config": config})
    sink = sc.sink_type.build(sc.name, sc.options, context)
    backoff = Backoff(sc.retry)
    keep: list[DeadLetter] = []
    sent = failed = 0
    try:
        await sink.start()
        for letter in letters:
            remaining = Batch(letter.events)
            error: SinkError | None = None
            for attempt in range(1, attempts + 1):
                try:
                    await sink.send(remaining)
                    error = None
                    break
                except SinkError as exc:
                    error = exc
                    if exc.accepted:
                        sent += exc.accepted
                        remaining = remaining[exc.accepted:]
                    if not exc.retryable:
                        break
                    await asyncio.sleep(backoff.delay(attempt, getattr(exc, "retry_after", None)))
            if error is None:
                sent += len(remaining)
            else:
                failed += len(remaining)
                keep.append(DeadLetter(
                    sink=letter.sink, error=str(error), retryable=error.retryable,
                    attempts=letter.attempts + attempt, first_attempt_at=letter.first_attempt_at,
                    last_attempt_at=now_rfc3339(), dead_lettered_at=letter.dead_lettered_at,
                    events=remaining.events))
            if progress is not None:
                progress(len(letter.events))
    finally:
        await sink.close()
        await asyncio.to_thread(dlf.remove_first, len(letters), keep)
    return sent, failed
