"""Portal index latency on a large store: search and filtered first pages.

    .venv/bin/python bench/bench_portal.py                 # 1,000,000 events in a temp dir
    .venv/bin/python bench/bench_portal.py --database /tmp/portal-1m.sqlite3   # reuse a file

Prints p50 / p95 (ms) per query kind, measured through SQLiteEventStore.query (worker
thread hand-off included). Target: p95 < 100 ms for a filtered first page.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auditshipd.portal.query import EventFilter
from auditshipd.portal.store_sqlite import SQLiteEventStore

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


async def seed(store: SQLiteEventStore, total: int) -> None:
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


async def measure(store: SQLiteEventStore, iterations: int) -> None:
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database", type=Path, help="SQLite file to create or reuse")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.database or Path(tmp) / "portal.sqlite3"
        store = SQLiteEventStore(path)
        await store.open()
        try:
            await seed(store, args.events)
            print(f"store: {path} ({path.stat().st_size / 1e6:.0f} MB, {await store.count():,} events)")
            await measure(store, args.iterations)
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
