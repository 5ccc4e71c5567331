"""A sink's stream with ``integrity = true`` (docs/integrity.md): the driver's one seam
to :mod:`auditshipd.integrity`.

Each line is sealed (``seq``/``hash``/``prev``) as it joins the batch being built, over
the bytes the sink is handed (after the sink's format, if it has one); a signed digest goes out as a batch of its own every
``digest_interval`` (an idle stream too) or ``digest_events``. A batch carries the chain
state after its last line, and the driver commits it with the batch's cursor marks, so a
re-send after a crash carries the same ``seq`` and hash.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Config, SinkConfig
from .batcher import PendingBatch

__all__ = ["Sealing", "sealing_for"]


def sealing_for(config: Config, sc: SinkConfig, saved: dict[str, Any] | None
                ) -> Sealing | None:
    """The sealing of ``sc``'s stream resumed from the cursor's ``saved`` chain state,
    or None when the sink does not have integrity on."""
    if not sc.integrity:
        return None
    settings = config.integrity
    if settings is None:  # parse_config refuses this; a hand-built Config may not
        raise ValueError(f"sink {sc.name} has integrity = true but no [integrity] signing_key")
    from ..integrity.sealer import StreamSealer

    return Sealing(StreamSealer(sc.name, settings.key, settings.policy(), saved),
                   formatted=sc.format != "native")


class Sealing:
    __slots__ = ("formatted", "sealer", "seal_lines")

    def __init__(self, sealer: Any, *, formatted: bool = False) -> None:
        self.sealer = sealer  # integrity.sealer.StreamSealer
        self.seal_lines: Callable[[list[bytes]], list[bytes]] = sealer.seal_lines
        # A sink with a format is handed the batch's payloads: a digest goes there too.
        self.formatted = formatted

    def seal(self, lines: list[bytes]) -> list[bytes]:
        return self.seal_lines(lines)

    def wait(self, timeout: float | None) -> float:
        """The read timeout, shortened so that an idle stream still gets its digests."""
        until_digest = self.sealer.seconds_to_digest()
        return until_digest if timeout is None else min(timeout, until_digest)

    def snapshot(self) -> dict[str, Any]:
        """The chain state after every line sealed so far (to commit with a batch)."""
        return self.sealer.snapshot()

    async def digest_if_due(self, job: PendingBatch,
                            dispatch: Callable[[PendingBatch], Awaitable[None]]
                            ) -> PendingBatch | None:
        """When a digest is due: dispatch ``job`` if it holds anything (the digest covers
        every line sealed so far, so they go first), then the digest, and return the next
        batch to build; None when no digest is due."""
        if not self.sealer.digest_due():
            return None
        if job.holds_anything():
            await dispatch(job)
        await dispatch(self.digest())
        return PendingBatch()

    def digest(self) -> PendingBatch:
        """A batch holding the signed digest of every line sealed so far (the caller
        dispatches the lines it holds first)."""
        digest = PendingBatch()
        digest.batch.append(self.sealer.digest())
        if self.formatted:
            digest.payloads.append(digest.batch[0])
        return digest

    def due(self) -> bool:
        return bool(self.sealer.digest_due())
