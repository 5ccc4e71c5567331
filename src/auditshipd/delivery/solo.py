"""A sink reading the journal alone, with its own reader from its own position.

Used by a sink without a shared pass (a driver on its own, as in tests and tools) for
good, and by a sink that left the shared pass (it fell behind, or starts behind it) until
it has caught up: its reader then reads no further than the pass has (``limit``), and
as soon as the sink has read exactly to the pass's position it joins the pass again,
keeping the batch it was building.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..journal.cursor import SegmentCursor
from ..journal.reader import JournalReader
from ..journal.segments import Chunk, OversizeLine, Release
from .batcher import Part, add_lines, cut_chunk
from .positions import reader_owes
from .waiting import wait_first

if TYPE_CHECKING:
    from .driver import SinkDriver
    from .fanout import SharedPass

__all__ = ["read_alone"]

# A sink reading alone beside a shared pass looks at least this often whether it has
# reached the pass (when it reads nothing, nothing else would make it look).
_CHECK_EVERY = 1.0


async def read_alone(driver: SinkDriver, reader: JournalReader, shared: SharedPass | None,
                     position: dict[str, SegmentCursor]) -> bool:
    """Once the sink has started, read, batch and dispatch until the driver stops
    (False) or, with ``shared``, until it has reached the pass's position and joined it
    (True). ``position``: where ``reader`` starts (updated as items are read). Beside
    the pass, the segments the pass lets go from the call on are offered to ``reader``
    until it is closed (``shared.kept.watch``), during the start too."""
    if shared is not None:
        # and those let go while no driver of this sink ran (it stopped, this one starts)
        if (box := shared.kept.take_over(driver.name)) is not None:
            reader.offered = box
        shared.kept.watch(reader.offered)
    await driver.until_ready()
    bcfg = driver.sc.batch
    deadline: float | None = None
    loop = asyncio.get_running_loop()
    stopping = driver.stopping
    while not stopping.is_set():
        if shared is not None and not reader.has_pending and not reader_owes(reader, position):
            relation = shared.relation(position)
            if relation == "at" and shared.admits(driver):
                driver.join_pass()
                return True
            reader.limit = None if relation == "apart" else shared.bounds
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        if driver.sealing is not None:
            timeout = driver.sealing.wait(timeout)
        if shared is not None:
            timeout = _CHECK_EVERY if timeout is None else min(timeout, _CHECK_EVERY)
        read = asyncio.ensure_future(reader.next_item(timeout if timeout is not None else 3600))
        await wait_first((stopping,), {read})
        if not read.done():
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
            break
        item = read.result()
        if driver.sealing and await driver.sealing.digest_if_due(driver.job, driver.dispatch):
            driver.renew()
            deadline = None
        job = driver.job
        if item is None:
            if job.holds_anything():
                await driver.dispatch_current()
                deadline = None
            continue
        if isinstance(item, Release):
            position.pop(item.segment, None)
            job.released.append(item.segment)
            job.marks.pop(item.segment, None)
            if not job.batch:
                await driver.dispatch_current()
                deadline = None
            continue
        position[item.segment] = item.mark
        if isinstance(item, OversizeLine):
            job.quarantine.append(driver.oversize_record(item))
            job.marks[item.segment] = item.mark
            if deadline is None:
                deadline = loop.time() + bcfg.timeout
            continue
        # A chunk: may hold more events than one batch.
        for lines, size, mark, quarantined in _process(driver, item, len(job.batch),
                                                       driver.nbytes):
            job = driver.job
            job.quarantine.extend(quarantined)
            add_lines(job, lines, driver.encoder, driver.sealing)
            driver.nbytes += size
            job.marks[item.segment] = mark
            if deadline is None:
                deadline = loop.time() + bcfg.timeout
            if len(job.batch) >= bcfg.max_events or driver.nbytes >= bcfg.max_bytes:
                await driver.dispatch_current()
                deadline = None
            if driver.sealing and await driver.sealing.digest_if_due(driver.job,
                                                                     driver.dispatch):
                driver.renew()
                deadline = None
        if deadline is not None and loop.time() >= deadline:
            await driver.dispatch_current()
            deadline = None
    return False


def _process(driver: SinkDriver, chunk: Chunk, used_events: int, used_bytes: int
             ) -> Iterator[Part]:
    """Yield (lines, bytes, mark, quarantined) parts of the chunk, each filling at most
    the room left in the batch being built (``used_*`` for the first part; the caller
    dispatches a full batch before asking for the next part)."""
    bcfg = driver.sc.batch
    p = driver.processor.process(chunk.data)
    driver.stats.read_events += len(p.raw)
    driver.stats.filtered += p.filtered
    quarantined = [
        driver.quarantine_file.record(chunk.segment, chunk.path,
                                      chunk.start + p.line_start(i), reason, line)
        for i, reason, line in p.bad
    ]
    return cut_chunk(chunk, p, quarantined, bcfg.max_events, bcfg.max_bytes, used_events,
                     used_bytes)

