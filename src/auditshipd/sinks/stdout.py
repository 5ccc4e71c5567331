"""``stdout`` sink: JSON Lines on standard output (for containers and trying things)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from ..plugin import Batch, EmptyOptions, RetryableError, SinkContext, SinkType, hookimpl

__all__ = ["StdoutSink"]


class StdoutSink:
    def __init__(self, name: str, options: EmptyOptions, context: SinkContext):
        self.name = name

    async def start(self) -> None:
        pass

    async def send(self, batch: Batch) -> None:
        try:
            await asyncio.to_thread(self._write, batch.jsonl())
        except (OSError, ValueError) as exc:
            raise RetryableError(f"cannot write to standard output: {exc}") from None

    @staticmethod
    def _write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    async def close(self) -> None:
        pass


@hookimpl
def register_sink_types() -> list[Any]:
    return [SinkType("stdout", EmptyOptions, StdoutSink, "JSON Lines on standard output")]
