"""Fixture plugin (a real drop-in file): a sink with a bug for far-future times.

It stores each event's ``occurred_at`` as signed 64-bit nanoseconds since the epoch, as
many receivers do, and never checked the range: an event dated after 2262 makes it
raise ``OverflowError`` (not a ``SinkError``) for the whole batch it is in. Delivered
events are appended to ``out`` (JSON Lines) only when the whole batch could be encoded.
"""

from __future__ import annotations

import datetime as dt

from auditshipd.plugin import SinkOptions, SinkType, hookimpl

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_INT64_MAX = 2**63 - 1


class EpochOptions(SinkOptions):
    out: str


def _nanoseconds(occurred_at: str) -> int:
    when = dt.datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))
    ns = (when - _EPOCH) // dt.timedelta(microseconds=1) * 1000
    if ns > _INT64_MAX:
        raise OverflowError(f"{occurred_at} does not fit in int64 nanoseconds")
    return ns


class EpochSink:
    def __init__(self, name, options, context):
        self.o = options

    async def start(self):
        pass

    async def send(self, batch):
        for event in batch.events:
            _nanoseconds(event["occurred_at"])
        with open(self.o.out, "ab") as f:
            f.write(batch.jsonl())

    async def close(self):
        pass


@hookimpl
def register_sink_types():
    return [SinkType("epoch", EpochOptions, EpochSink, "test sink that overflows after 2262")]
