"""Fixture plugin (a real drop-in file): a sink driven by a script file, for tests.

``start_error`` makes ``start()`` fail. ``script`` names a file whose lines are consumed one per send attempt: ``ok``,
``retry``, ``retry-after N``, ``permanent``, ``partial N`` (N events accepted, then a
permanent error for the next one), ``hang`` (never answers), ``crash`` (raises a
``RuntimeError``, not a ``SinkError``). Empty or missing file: ``ok``. Accepted events are
appended to ``out`` (JSON Lines).
"""

from __future__ import annotations

import asyncio
import fcntl
import os

from auditshipd.plugin import PermanentError, RetryableError, SinkOptions, SinkType, hookimpl


class FlakyOptions(SinkOptions):
    out: str
    script: str = ""
    # "permanent", "retry" or "crash": start() always fails that way (a sink that cannot
    # start; "crash" raises a RuntimeError).
    start_error: str = ""


def _next_answer(path: str) -> str:
    if not path or not os.path.exists(path):
        return "ok"
    with open(path, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        lines = f.read().splitlines()
        if not lines:
            return "ok"
        f.seek(0)
        f.truncate()
        f.write("".join(x + "\n" for x in lines[1:]))
        return lines[0].strip()


class FlakySink:
    def __init__(self, name, options, context):
        self.o = options

    async def start(self):
        if self.o.start_error == "permanent":
            raise PermanentError("scripted: credentials refused")
        if self.o.start_error == "crash":
            raise RuntimeError("scripted start bug")
        if self.o.start_error == "retry":
            raise RetryableError("scripted: broker unreachable")

    async def send(self, batch):
        answer = _next_answer(self.o.script)
        if answer.startswith("retry-after"):
            raise RetryableError("scripted 503", retry_after=float(answer.split()[1]))
        if answer == "retry":
            raise RetryableError("scripted retryable failure")
        if answer == "hang":
            await asyncio.Event().wait()
        if answer == "crash":
            raise RuntimeError("scripted sink bug")
        if answer == "permanent":
            raise PermanentError("scripted permanent failure")
        accepted = len(batch)
        if answer.startswith("partial"):
            accepted = min(int(answer.split()[1]), len(batch))
        with open(self.o.out, "ab") as f:
            f.write(batch[:accepted].jsonl())
        if accepted < len(batch):
            raise PermanentError("scripted bad event", accepted=accepted, rejected=1)

    async def close(self):
        pass


@hookimpl
def register_sink_types():
    return [SinkType("flaky", FlakyOptions, FlakySink, "test sink driven by a script file")]
