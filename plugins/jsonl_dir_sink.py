"""An example drop-in sink plugin: one JSON Lines file per batch in a directory.

Drop this file into a directory listed in ``plugin_dirs`` and configure::

    [[sinks]]
    name = "batches"
    type = "jsonl_dir"
    directory = "/var/lib/auditshipd/batches"

The file name is ``<first_id>-<last_id>.jsonl``: a batch sent again after a crash
overwrites its own file instead of duplicating it. That is the whole plugin: batching,
retries, dead letters and cursors are the core's.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from auditshipd.plugin import ConfigError, RetryableError, SinkOptions, SinkType, hookimpl


class JsonlDirOptions(SinkOptions):
    directory: str


class JsonlDirSink:
    def __init__(self, name, options, context):
        self.dir = Path(options.directory)

    async def start(self):
        await asyncio.to_thread(self.dir.mkdir, parents=True, exist_ok=True)

    async def send(self, batch):
        target = self.dir / f"{batch.first_id}-{batch.last_id}.jsonl"
        try:
            await asyncio.to_thread(_write_atomically, target, batch.jsonl())
        except OSError as exc:
            raise RetryableError(f"cannot write {target}: {exc.strerror}") from None

    async def close(self):
        pass


def _write_atomically(target: Path, data: bytes) -> None:
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def _validate(options):
    if not options.directory:
        raise ConfigError("must not be empty", key="directory")


@hookimpl
def register_sink_types():
    return [SinkType("jsonl_dir", JsonlDirOptions, JsonlDirSink,
                     "Example drop-in: one JSONL file per batch", validate=_validate)]
