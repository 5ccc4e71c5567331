"""Many organization streams over one journal: the daemon's cost against one unscoped sink.

    .venv/bin/python bench/streams.py [--events 1000000] [--streams 1000] [--sink file|http]
                                      [--down 0] [--runs 1] [--profile F]

Writes one journal of N events spread round-robin over ``--streams`` organizations
(``o0000``, ``o0001``...; the events of bench/gen_events.py with their organization
slug replaced), then, in the same run and on the same journal:

1. one unscoped sink (file, or http to bench/receiver.py);
2. ``--streams`` sinks, each scoped to one organization (``organizations = ["oK"]``).

For each it prints CPU-s per 1M journal events (daemon utime + stime), peak RSS and the
wall time until every event arrived, and the ratio streams / unscoped. Every stream's
delivery is checked: each file (or receiver path) holds exactly its organization's
events, each once (a file sink's output is read back; the receiver counts events and
distinct ids per path).

``--down S`` (http only) adds a third run: the receiver of stream 0 is not listening for
the first S seconds (connections refused: the stream retries, leaves the shared pass and
later catches up alone). It prints the other streams' throughput against run 2 and how
long the down stream took to catch up once its receiver was back.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BenchTimeout,
    Daemon,
    Receiver,
    cpu_split,
    free_port,
    print_header,
    wait_until,
)
from gen_events import generate  # noqa: E402

_SLUG = re.compile(rb'"slug":"[^"]*"')


def write_journal(path: Path, n: int, orgs: int) -> list[int]:
    """``n`` events, event i of organization ``o{i % orgs}``; returns events per org."""
    per_org = [0] * orgs
    i = 0
    with open(path, "wb") as f:
        for block in generate(n):
            lines = block.split(b"\n")
            lines.pop()
            out = []
            for line in lines:
                k = i % orgs
                out.append(_SLUG.sub(b'"slug":"o%04d"' % k, line, count=1))
                per_org[k] += 1
                i += 1
            f.write(b"\n".join(out) + b"\n")
    return per_org


def _config(run_dir: Path, journal: Path, sinks: list[dict[str, Any]]) -> Path:
    lines = [
        "shutdown_timeout = 30.0",
        "config_watch = false",
        "[journal]",
        f"path = {json.dumps(str(journal))}",
        f"paths = [{json.dumps(str(journal) + '*')}]",
        f"state_dir = {json.dumps(str(run_dir / 'state'))}",
        "[portal]",
        "enabled = false",
        "[metrics]",
        "enabled = false",
    ]
    for sink in sinks:
        lines.append("[[sinks]]")
        for key, value in sink.items():
            if isinstance(value, dict):  # an inline table
                inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    path = run_dir / "auditshipd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class _FileCounts:
    """Lines per output file, reading only what was appended since the last look."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.pos = [0] * len(paths)
        self.lines = [0] * len(paths)

    def total(self) -> int:
        for k, p in enumerate(self.paths):
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                continue
            if size == self.pos[k]:
                continue
            with open(p, "rb") as f:
                f.seek(self.pos[k])
                data = f.read()
            self.lines[k] += data.count(b"\n")
            self.pos[k] += len(data)
        return sum(self.lines)


def _check_files(paths: list[Path], per_org: list[int]) -> list[str]:
    """Problems: a file without exactly its organization's events, each once."""
    problems = []
    for k, p in enumerate(paths):
        ids = []
        try:
            with open(p, "rb") as f:
                for line in f:
                    if b'"slug":"o%04d"' % k not in line:
                        problems.append(f"{p.name}: an event of another organization")
                        break
                    ids.append(line[7:line.index(b'"', 7)])
        except FileNotFoundError:
            pass
        if len(ids) != per_org[k] or len(set(ids)) != len(ids):
            problems.append(f"{p.name}: {len(ids)} events ({len(set(ids))} distinct),"
                            f" expected {per_org[k]}")
    return problems


def run(kind: str, journal: Path, workdir: Path, n: int, per_org: list[int], streams: int,
        timeout: float, down: float = 0.0, profile: Path | None = None) -> dict[str, Any]:
    """One daemon run; ``streams`` = 0: one unscoped sink."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"streams-{streams}-", dir=workdir))
    rx = Receiver(log=run_dir / "receiver.log").start() if kind == "http" else None
    late_port = free_port()
    sinks: list[dict[str, Any]] = []
    outs: list[Path] = []
    names = [f"o{k:04d}" for k in range(streams)] or ["all"]
    for k, name in enumerate(names):
        sink: dict[str, Any] = {"name": name, "type": kind}
        if rx is not None:
            port = late_port if down and k == 0 else rx.port
            sink["url"] = f"http://127.0.0.1:{port}/s/{name}"
            sink["retry"] = {"max_backoff": 2.0}
        else:
            outs.append(run_dir / "out" / f"{name}.jsonl")
            sink["path"] = str(outs[-1])
        if streams:
            sink["organizations"] = [name]
        sinks.append(sink)
    config = _config(run_dir, journal, sinks)
    daemon = Daemon(config, run_dir, profile=profile)
    late: Receiver | None = None
    others_n = n - (per_org[0] if down else 0)
    res: dict[str, Any] = {"streams": streams, "kind": kind}
    try:
        counts = _FileCounts(outs)

        def total() -> int:
            if rx is None:
                return counts.total()
            got = rx.count()
            return got + (late.count() if late is not None else 0)

        def alive() -> str | None:
            return daemon.problem() or (rx.problem() if rx is not None else None)

        daemon.start()
        t0 = time.monotonic()
        wait_until(lambda: total() >= others_n, timeout, f"{others_n:,} events", interval=0.2,
                   alive=alive)
        res["others_wall"] = time.monotonic() - t0
        if down:
            left = max(0.0, down - (time.monotonic() - t0))
            time.sleep(left)  # the outage: stream 0's receiver is not listening yet
            late = Receiver(port=late_port, log=run_dir / "late.log").start()
            t1 = time.monotonic()
            wait_until(lambda: late is not None and late.count() >= per_org[0], timeout,
                       "the down stream to catch up", interval=0.2, alive=alive)
            res["catch_up"] = time.monotonic() - t1
        res["wall"] = time.monotonic() - t0
        res["cpu"] = daemon.cpu()
        res["user"], res["sys"] = cpu_split(daemon.pid)
        res["hwm_mb"] = daemon.hwm_mb()
        res["rc"] = daemon.stop(120)
        if rx is None:
            res["problems"] = _check_files(outs, per_org) if streams else (
                [] if counts.total() == n else [f"{counts.total()} events, expected {n}"])
        else:
            paths = rx._get("/paths")
            by_path = json.loads(paths)
            if late is not None:
                by_path.update(json.loads(late._get("/paths")))
            problems = []
            for k, name in enumerate(names):
                want = per_org[k] if streams else n
                got, distinct = by_path.get(f"/s/{name}", [0, 0])
                if distinct != want:
                    problems.append(f"{name}: {got} events ({distinct} distinct), expected {want}")
            res["problems"] = problems
    except BenchTimeout:
        print(f"  ! daemon log tail:\n{daemon.log_tail()}", file=sys.stderr)
        raise
    finally:
        daemon.__exit__()
        for r in (rx, late):
            if r is not None:
                r.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    res["cpu_per_m"] = res["cpu"] / n * 1e6
    return res


def _show(label: str, r: dict[str, Any]) -> None:
    ok = "exactly once per stream" if not r["problems"] else f"PROBLEMS: {r['problems'][:5]}"
    print(f"  {label:<28} CPU {r['cpu']:7.2f} s (user {r['user']:.2f}, system {r['sys']:.2f})"
          f" = {r['cpu_per_m']:6.2f} CPU-s/1M,"
          f" peak RSS {r['hwm_mb']:6.1f} MB, all delivered in {r['others_wall']:6.1f} s;"
          f" {ok}; exit {r['rc']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--sink", choices=["file", "http"], default="file")
    ap.add_argument("--down", type=float, default=0.0,
                    help="http: stream 0's receiver down for this many seconds (a third run)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--profile", type=Path, default=None,
                    help="run the streams daemon under cProfile, write the stats here")
    args = ap.parse_args(argv)
    if args.down and args.sink != "http":
        ap.error("--down needs --sink http")
    print_header()
    workdir = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    try:
        journal = workdir / "journal" / "audit.jsonl"
        journal.parent.mkdir()
        per_org = write_journal(journal, args.events, args.streams)
        mb = journal.stat().st_size / 1e6
        print(f"journal: {args.events:,} events, {mb:.0f} MB, {args.streams} organizations;"
              f" sink {args.sink}")
        failed = False
        for i in range(args.runs):
            print(f"run {i + 1}:")
            one = run(args.sink, journal, workdir, args.events, per_org, 0, args.timeout)
            _show("1 unscoped sink", one)
            many = run(args.sink, journal, workdir, args.events, per_org, args.streams,
                       args.timeout, profile=args.profile)
            _show(f"{args.streams} org streams", many)
            print(f"  ratio streams/unscoped: CPU {many['cpu'] / one['cpu']:.2f}x,"
                  f" peak RSS {many['hwm_mb'] / one['hwm_mb']:.2f}x")
            failed = failed or bool(one["problems"] or many["problems"])
            if args.down:
                hurt = run(args.sink, journal, workdir, args.events, per_org, args.streams,
                           args.timeout, down=args.down)
                _show(f"{args.streams} streams, 1 down {args.down:.0f}s", hurt)
                before = (args.events - per_org[0]) / many["others_wall"]
                after = (args.events - per_org[0]) / hurt["others_wall"]
                print(f"  other streams: {after:,.0f} events/s with one down vs {before:,.0f}"
                      f" with all up ({(1 - after / before) * 100:+.1f}% drop); the down stream"
                      f" caught up {hurt['catch_up']:.1f} s after its receiver came back")
                failed = failed or bool(hurt["problems"])
        if args.profile:
            import pstats

            pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)
        return 1 if failed else 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
