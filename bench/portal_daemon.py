"""The portal sink inside the daemon: a journal backlog indexed into the portal's store.

    .venv/bin/python bench/portal_daemon.py [--events 200000] [--runs 2]
    .venv/bin/python bench/portal_daemon.py --database postgresql://postgres@127.0.0.1/DB

Writes ``--events`` events into a journal (bench/gen_events.py), starts ``auditshipd run``
with one ``portal`` sink at its default settings (batches, in-flight batches, the store),
and waits until the store holds every event. Prints events/s from the daemon's start to
the last event stored, and CPU seconds per 1M events: the daemon (reading, redacting,
batching and the store's writes), plus for PostgreSQL the server: the backends serving
the database and the server's own processes (WAL writer, background writer,
checkpointer), read from /proc (the server must run on this machine, used by nothing
else during the run). A PostgreSQL database
must be empty and have the schema (``auditshipd portal migrate``); each run after the
first adds the same events again, which the store skips as duplicates, so give one
database per run (``{run}`` in the URL is replaced by the run's number).
Target: 30,000 events/s and 30 CPU-s per 1M events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Daemon, print_header, wait_until, write_config
from bench_portal import ServerCpu, _server_cpu
from gen_events import write_events

from auditshipd.portal.backend import event_store, is_postgres_url
from auditshipd.portal.query import EventFilter


async def _count(database: str) -> int:
    if not is_postgres_url(database) and not Path(database).exists():
        return 0  # the daemon has not created it yet (opening it here would)
    store = event_store(database)
    await store.open()
    try:
        # every event, the portal's own access records included
        return await store.count(EventFilter(include_access=True))
    finally:
        await store.close()


def run_once(journal: Path, work: Path, database: str, events: int, timeout: float) -> None:
    state = work / "state"
    config = write_config(work / "auditshipd.toml", journal.parent, state,
                          {"name": "portal", "type": "portal", "database": database,
                           "retention_days": 0})
    pg_db = database.rsplit("/", 1)[-1].split("?")[0] if is_postgres_url(database) else None
    server0 = _server_cpu(pg_db) if pg_db else ServerCpu(0.0, 0.0)
    with Daemon(config, work) as daemon:
        t0 = time.perf_counter()
        daemon.wait_started()
        stored = 0

        def done() -> bool:
            nonlocal stored
            stored = asyncio.run(_count(database))
            return stored >= events

        wait_until(done, timeout, f"{events:,} events in the store", interval=1.0,
                   alive=daemon.problem)
        wall = time.perf_counter() - t0
        cpu = daemon.cpu()
        # before the daemon stops: its connections' backends end with it
        server = (_server_cpu(pg_db) - server0) if pg_db else ServerCpu(0.0, 0.0)
        daemon.stop()
    print(f"  {stored:,} events in {wall:.1f} s = {events / wall:,.0f} events/s;"
          f" CPU per 1M events: daemon {cpu * 1e6 / events:.1f} s"
          + (f", {server.describe(events)}, together"
             f" {(cpu + server.total) * 1e6 / events:.1f} s" if pg_db else ""), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--database", default="",
                    help="PostgreSQL URL ({run}: the run's number); default a SQLite file per run")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    print_header()
    with tempfile.TemporaryDirectory(prefix="portal-daemon-") as tmp:
        root = Path(tmp)
        journal = root / "journal" / "audit.jsonl"
        journal.parent.mkdir()
        write_events(str(journal), args.events, args.seed)
        print(f"journal: {args.events:,} events, {journal.stat().st_size / 1e6:.0f} MB")
        for run in range(1, args.runs + 1):
            work = root / f"run{run}"
            work.mkdir()
            # The SQLite file in a directory of its own, as the default config keeps it
            # in the state directory: not beside the config file, whose directory the
            # daemon watches (each write to the store would wake that watch).
            (work / "store").mkdir()
            database = (args.database.replace("{run}", str(run)) if args.database
                        else str(work / "store" / "portal.sqlite3"))
            print(f"run {run}: {json.dumps(database.split('@')[-1])}", flush=True)
            run_once(journal, work, database, args.events, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
