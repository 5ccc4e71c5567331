"""What self-service streams cost a daemon: one look at the store's change counter (done
every stream_poll_interval seconds), and turning N definitions into sinks (done at start
and after every change: read, decrypt, validate with the sink type's schema).

    .venv/bin/python bench/bench_store_streams.py [--streams 1000] [--looks 2000]
        [--database postgresql://...]   (default: a SQLite file in a temp dir)

Prints wall and CPU time per look and per build, and per stream of a build.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="


async def main(args: argparse.Namespace) -> None:
    os.environ["AUDITSHIPD_SECRETS_KEY"] = KEY
    from auditshipd.config import parse_config
    from auditshipd.plugins.manager import build_plugin_manager, sink_types
    from auditshipd.portal.backend import event_store, stream_store
    from auditshipd.portal.stream_defs import StreamDefinition
    from auditshipd.portal.stream_secrets import load_secret_box
    from auditshipd.service.store_streams import StoreStreams

    tmp = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    database = args.database or str(tmp / "portal.sqlite3")
    types = sink_types(build_plugin_manager([]))
    config = parse_config(f"""
[journal]
path = "{tmp}/j/audit.jsonl"
state_dir = "{tmp}/state"
[portal]
database = "{database}"
""", str(tmp / "auditshipd.toml"), types)
    events = event_store(database)
    await events.open()
    store = stream_store(events)
    box = load_secret_box(None)
    for i in range(args.streams):
        sid = StreamDefinition.new_id()
        d = StreamDefinition(sid, f"org{i // 5:04d}", f"s{i % 5}", "http",
                             {"url": f"https://siem{i}.example.com/in", "encoding": "ndjson"},
                             box.seal(sid, {"bearer_token": f"token-{i:08d}"}), ["bearer_token"],
                             False, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "b", "b")
        await store.insert(d, 10)
    streams = StoreStreams()
    await streams.sink_configs(config, types)  # warm: plugin types, connections
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(args.looks):
        await streams.changed(config)
    c1, w1 = time.process_time(), time.perf_counter()
    builds = 5
    for _ in range(builds):
        sinks = await streams.sink_configs(config, types)
    c2, w2 = time.process_time(), time.perf_counter()
    assert len(sinks) == args.streams, len(sinks)
    backend = "postgresql" if database.startswith("postgres") else "sqlite"
    print(f"backend {backend}, {args.streams} stream definitions")
    print(f"one look at the change counter: {(w1 - w0) / args.looks * 1e6:8.1f} us wall,"
          f" {(c1 - c0) / args.looks * 1e6:8.1f} us CPU (mean of {args.looks})")
    print(f"build all sinks: {(w2 - w1) / builds * 1e3:8.1f} ms wall, {(c2 - c1) / builds * 1e3:8.1f} ms"
          f" CPU; per stream {(c2 - c1) / builds / args.streams * 1e6:.1f} us CPU (mean of {builds})")
    await streams.close()
    await events.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--looks", type=int, default=2000)
    parser.add_argument("--database", default="")
    asyncio.run(main(parser.parse_args()))
