"""Group commit for the ``file`` sinks: one writer per file system.

A ``file`` sink acknowledges a batch once its lines are durable. Each sink fsyncing its
own file costs one journal commit and one disk-cache flush per batch (a few hundred
microseconds of CPU, and a wait); a thousand organization streams written to local files
spent more than half the daemon's CPU there. The sinks of one file system hand their
writes to one :class:`GroupWriter` instead: it takes every write queued, runs them in
one worker thread, makes them durable together
(:func:`auditshipd.durable.sync_files`: one ``syncfs`` for many files) and only then
acknowledges each. A write or sync error fails only the batches of the file it concerns.
File systems do not wait for each other: a stalled mount holds only its own sinks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..durable import sync_files

__all__ = ["GroupWriter", "writer_for"]

# A write: appends a batch to its file; returns the descriptor to make durable (None:
# nothing to sync, the sink does not fsync).
Write = Callable[[], "int | None"]

_writers: dict[tuple[asyncio.AbstractEventLoop, int], GroupWriter] = {}


def writer_for(device: int) -> GroupWriter:
    """The running loop's writer of the file system ``device`` (``st_dev``)."""
    loop = asyncio.get_running_loop()
    writer = _writers.get((loop, device))
    if writer is None:
        for key in [k for k in _writers if k[0].is_closed()]:
            del _writers[key]
        writer = _writers[(loop, device)] = GroupWriter()
    return writer


class GroupWriter:
    """Runs queued writes in groups, each group made durable at once."""

    def __init__(self) -> None:
        self._queue: list[tuple[Write, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self.groups = 0  # groups written (for tests and benchmarks)

    async def write(self, write: Write) -> None:
        """Run ``write`` with the others queued, return once its bytes are durable (or
        raise its OSError). A cancelled caller's write may still happen: the batch is
        then sent again, which at-least-once delivery allows."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((write, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="file writes")
        await done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            group, self._queue = self._queue, []
            self.groups += 1
            try:
                outcomes = await loop.run_in_executor(None, _write_group,
                                                      [w for w, _ in group])
            except asyncio.CancelledError:  # the loop is closing
                for _w, done in group + self._queue:
                    done.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - the executor is gone: fail them all
                outcomes = [exc] * len(group)
            for (_w, done), outcome in zip(group, outcomes, strict=True):
                if done.done():
                    continue
                if outcome is None:
                    done.set_result(None)
                else:
                    done.set_exception(outcome)


def _write_group(writes: list[Write]) -> list[BaseException | None]:
    outcomes: list[BaseException | None] = []
    synced: dict[int, list[int]] = {}
    for k, write in enumerate(writes):
        try:
            fd = write()
        except Exception as exc:  # noqa: BLE001 - it belongs to that batch alone
            outcomes.append(exc)
            continue
        outcomes.append(None)
        if fd is not None:
            synced.setdefault(fd, []).append(k)
    for fd, exc in sync_files(synced).items():
        for k in synced[fd]:
            outcomes[k] = exc
    return outcomes
