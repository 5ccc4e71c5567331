"""Portal index latency on a large store (search and filtered first pages), and ingest speed.

    .venv/bin/python bench/bench_portal.py                 # 1,000,000 events in a temp dir
    .venv/bin/python bench/bench_portal.py --database /tmp/portal-1m.sqlite3   # reuse a file
    .venv/bin/python bench/bench_portal.py --database postgresql://postgres@127.0.0.1/bench
    .venv/bin/python bench/bench_portal.py --mode ingest --events 200000 [--database URL]

Prints p50 / p95 (ms) per query kind, measured through the store's ``query`` (worker thread
or connection pool hand-off included). Target: p95 < 100 ms for a filtered first page.
A PostgreSQL database must have the schema (``auditshipd portal migrate``).

``--mode ingest`` feeds ``--events`` new events through the ``portal`` sink the way the
daemon does (batches of ``--batch`` redacted JSON lines, ``--concurrency`` of them in
flight, the daemon's collector settings; ``--order time`` sends them in time order, as a
journal holds them) and prints events/s and CPU
seconds per 1M events: this process, plus for PostgreSQL the CPU of the server: the
backends serving this database and the server's own processes (WAL writer, background
writer, checkpointer), read from /proc (needs the server on this machine, used by nothing
else during the run).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from auditshipd.delivery.batch import Batch
from auditshipd.plugin import SinkContext
from auditshipd.portal.backend import event_store, is_postgres_url
from auditshipd.portal.query import EventFilter
from auditshipd.portal.sink import (
    BATCH_DEFAULTS,
    CONCURRENCY_DEFAULT,
    PortalSink,
    PortalSinkOptions,
)
from auditshipd.portal.store import EventStore
from auditshipd.service import heap

ACTIONS = ["user.created", "user.deleted", "user.login", "user.logout", "role.granted",
           "role.revoked", "api_key.created", "api_key.revoked", "document.viewed",
           "document.exported", "settings.changed", "billing.updated", "sso.configured",
           "export.requested", "member.invited", "member.removed"]
WEIGHTS = [8, 2, 30, 20, 3, 2, 2, 1, 15, 4, 5, 3, 0.5, 1, 2, 1]
ORGS = [f"org{i:03d}" for i in range(200)]
FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoe"]
LAST = [f"{w}{i}" for w in ("smith", "jones", "garcia", "chen", "novak") for i in range(40)]
WORDS = ["quarterly", "report", "invoice", "payroll", "roadmap", "alpha", "beta", "gamma", "delta",
         "sso", "saml", "okta", "ldap", "sandbox", "production", "staging", "legal", "hold",
         "retention", "export", "budget", "contract", "hiring", "security", "incident", "review"]
START = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
SPAN_MS = 180 * 86_400_000


def _person(rng: random.Random) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {"type": "user", "email": f"{first}.{last}@{rng.choice(ORGS)}.example", "name": f"{first} {last}"}


def make_events(n: int, start: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        t = START + dt.timedelta(milliseconds=rng.randrange(SPAN_MS))
        out.append({
            "id": f"evt_{i:08d}",
            "action": rng.choices(ACTIONS, WEIGHTS)[0],
            "occurred_at": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
            "version": 1,
            "organization": {"slug": rng.choice(ORGS)},
            "actor": _person(rng),
            "targets": [_person(rng) for _ in range(rng.choice([0, 1, 1, 2]))],
            "context": {"location": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"},
            "metadata": {"note": " ".join(rng.sample(WORDS, 3)), "size": rng.randrange(10_000)},
        })
    return out


async def seed(store: EventStore, total: int) -> None:
    have = await store.count()
    rng = random.Random(1)
    t0 = time.perf_counter()
    chunk = 10_000
    for start in range(have, total, chunk):
        await store.insert_events(make_events(min(chunk, total - start), start, rng))
        if (start // chunk) % 10 == 0:
            print(f"  seeded {start + chunk:,} events ({time.perf_counter() - t0:.0f} s)", flush=True)
    if total > have:
        await store.optimize()
        print(f"seeded {total - have:,} events in {time.perf_counter() - t0:.1f} s")


def _day(rng: random.Random) -> tuple[dt.datetime, dt.datetime]:
    since = START + dt.timedelta(days=rng.randrange(179))
    return since, since + dt.timedelta(days=1)


def scenarios() -> dict[str, Callable[[random.Random], EventFilter]]:
    def email(rng: random.Random) -> str:
        return _person(rng)["email"]

    return {
        "first page, no filter": lambda r: EventFilter(),
        "search 1 word": lambda r: EventFilter(q=r.choice(FIRST + WORDS)),
        "search 2 words": lambda r: EventFilter(q=f"{r.choice(FIRST)} {r.choice(WORDS)}"),
        "search prefix (3 chars)": lambda r: EventFilter(q=r.choice(WORDS)[:3]),
        "search e-mail phrase": lambda r: EventFilter(q=f"{r.choice(FIRST)}.{r.choice(LAST)}"),
        "search + action": lambda r: EventFilter(q=r.choice(WORDS), actions=(r.choice(ACTIONS),)),
        "action (1)": lambda r: EventFilter(actions=(r.choice(ACTIONS),)),
        "action (3)": lambda r: EventFilter(actions=tuple(r.sample(ACTIONS, 3))),
        "actor": lambda r: EventFilter(actor=email(r)),
        "target": lambda r: EventFilter(target=email(r)),
        "date range (1 day)": lambda r: EventFilter(since=_day(r)[0], until=_day(r)[1]),
        "action + date range": lambda r: EventFilter(actions=(r.choice(ACTIONS),), since=(d := _day(r))[0], until=d[1]),
        "actor + action": lambda r: EventFilter(actor=email(r), actions=(r.choice(ACTIONS),)),
        "organization + action": lambda r: EventFilter(organization=r.choice(ORGS), actions=(r.choice(ACTIONS),)),
    }


async def measure(store: EventStore, iterations: int) -> None:
    rng = random.Random(7)
    print(f"\n{'query (first page of 50)':<28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, make in scenarios().items():
        times = []
        for _ in range(iterations):
            f = make(rng)
            t0 = time.perf_counter()
            await store.query(f, None, 50)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        p95 = times[int(len(times) * 0.95) - 1]
        print(f"{name:<28} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}", flush=True)


# The server's own processes, which work for every database: the WAL a batch writes is
# flushed by the WAL writer, the pages it dirties are written by the background writer and
# the checkpointer. Their CPU is counted with the backends' (nothing else should use the
# server during a run).
_SERVER_PROCESSES = ("checkpointer", "background writer", "walwriter", "autovacuum launcher",
                     "logical replication launcher", "archiver", "stats collector")


class ServerCpu(NamedTuple):
    """CPU seconds used so far by a PostgreSQL server on this machine, read from /proc."""

    backends: float  # the backends connected to the database (and its autovacuum workers)
    background: float  # the server's own processes (see _SERVER_PROCESSES)

    def __sub__(self, other: ServerCpu) -> ServerCpu:
        return ServerCpu(self.backends - other.backends, self.background - other.background)

    @property
    def total(self) -> float:
        return self.backends + self.background

    def describe(self, events: int) -> str:
        """The CPU-s per 1M events, as the benches print them."""
        per = 1e6 / events
        return (f"server {self.total * per:.1f} s (backends {self.backends * per:.1f}"
                f" + background {self.background * per:.1f})")


def _server_cpu(database: str) -> ServerCpu:
    """CPU seconds used so far by the PostgreSQL backends connected to ``database`` and by
    the server's own processes. A backend that has ended is no longer counted: read it
    before the connections close."""
    tick = os.sysconf("SC_CLK_TCK")
    backends = background = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not cmd.startswith("postgres:"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
        if f" {database} " in f"{cmd.rstrip()} ":
            backends += seconds
        elif cmd.rstrip().endswith(_SERVER_PROCESSES):
            background += seconds
    return ServerCpu(backends, background)


async def ingest(database: str, total: int, batch: int, order: str = "random",
                 concurrency: int = CONCURRENCY_DEFAULT) -> None:
    """Feed ``total`` new events through the ``portal`` sink as the daemon does: batches
    of redacted JSON lines (``Batch(lines=...)``), nothing decoded beforehand."""
    rng = random.Random(int(time.time()))
    first = 10_000_000_000 + rng.randrange(10**9) * 1000  # new ids: nothing is skipped
    events = make_events(total, first, rng)
    if order == "time":  # as a journal holds them: occurred_at rising
        events.sort(key=lambda e: e["occurred_at"])
    lines = [msgspec.json.encode(e) for e in events]
    # Only the lines stay (bytes, which the collector does not track): the daemon holds a
    # few batches, not a million decoded events the garbage collector would walk.
    del events
    gc.collect()
    gc.freeze()
    heap.tune()  # the daemon's collector settings
    with tempfile.TemporaryDirectory() as state:
        context = SinkContext("portal", Path(state), logging.getLogger("bench"))
        sink = PortalSink("portal", PortalSinkOptions(database=database, retention_days=0), context)
        await sink.start()
        try:
            stored0 = await sink.store.count()
            pg_db = database.rsplit("/", 1)[-1].split("?")[0] if is_postgres_url(database) else None
            server0 = _server_cpu(pg_db) if pg_db else ServerCpu(0.0, 0.0)
            cpu0, t0 = time.process_time(), time.perf_counter()
            # Up to ``concurrency`` batches in flight, as the daemon's driver sends them.
            slots = asyncio.Semaphore(concurrency)

            async def send(part: list[bytes]) -> None:
                try:
                    await sink.send(Batch(lines=part))
                finally:
                    slots.release()

            sends = []
            for i in range(0, total, batch):
                await slots.acquire()
                sends.append(asyncio.create_task(send(lines[i : i + batch])))
            await asyncio.gather(*sends)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            server = (_server_cpu(pg_db) - server0) if pg_db else ServerCpu(0.0, 0.0)
            stored = await sink.store.count() - stored0
        finally:
            await sink.close()
    print(f"ingest: {stored:,} of {total:,} events in {wall:.1f} s = {total / wall:,.0f} events/s"
          f" (batches of {batch}, {concurrency} in flight, {order} order)")
    print(f"  CPU per 1M events: this process {cpu * 1e6 / total:.1f} s"
          + (f", {server.describe(total)}, together"
             f" {(cpu + server.total) * 1e6 / total:.1f} s" if pg_db else ""))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database", help="SQLite file or PostgreSQL URL to create/reuse")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--mode", choices=["search", "ingest"], default="search")
    parser.add_argument("--batch", type=int, default=BATCH_DEFAULTS["max_events"],
                        help="events per batch (ingest; default: the portal sink's)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY_DEFAULT,
                        help="ingest: batches in flight (default: the portal sink's)")
    parser.add_argument("--order", choices=["random", "time"], default="random",
                        help="ingest: events in random time order over 180 days (default, the"
                        " worst case) or in time order, as a journal holds them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        database = args.database or str(Path(tmp) / "portal.sqlite3")
        if args.mode == "ingest":
            await ingest(database, args.events, args.batch, args.order, args.concurrency)
            return
        store = event_store(database)
        await store.open()
        try:
            await seed(store, args.events)
            where = database if is_postgres_url(database) else (
                f"{database} ({Path(database).stat().st_size / 1e6:.0f} MB)")
            print(f"store: {where.split('@')[-1]}, {await store.count():,} events")
            await measure(store, args.iterations)
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
