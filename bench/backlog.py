"""Memory under a large backlog: the journal is the buffer, the daemon's RSS stays flat.

    .venv/bin/python bench/backlog.py [--events 5000000] [--down 10]

Writes ``--events`` events into the journal (bench/gen_events.py), starts ``auditshipd
run`` with one http sink (default settings) while the receiver is DOWN (connections
refused: the daemon retries with its default backoff), starts the receiver after
``--down`` seconds, and waits until it holds every event. Samples the daemon's VmRSS
every 0.5 s throughout and prints the timeline, the peak, the final VmHWM and the time
to drain (receiver start -> last event; it includes the daemon's last backoff wait).
Target: peak RSS < 100 MB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchTimeout,
    Daemon,
    Receiver,
    free_port,
    print_header,
    write_config,
)
from gen_events import write_events

__all__ = ["main"]

TARGET_RSS_MB = 100.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--down", type=float, default=10.0, help="seconds the receiver is down")
    ap.add_argument("--timeout", type=float, default=0.0,
                    help="seconds to wait for the drain (default 120 + events/2000)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    n = args.events
    timeout = args.timeout or 120 + n / 2000
    print_header()
    workdir = Path(tempfile.mkdtemp(prefix="auditshipd-backlog-"))
    samples: list[tuple[float, float]] = []
    try:
        journal_dir = workdir / "journal"
        journal_dir.mkdir()
        t0 = time.perf_counter()
        size = write_events(str(journal_dir / "audit.jsonl"), n, args.seed)
        print(f"journal: {n:,} events, {size / 1e6:.0f} MB, generated in "
              f"{time.perf_counter() - t0:.1f}s")
        port = free_port()
        rx = Receiver(port, log=workdir / "receiver.log")
        cfg = write_config(workdir / "auditshipd.toml", journal_dir, workdir / "state",
                           {"name": "bench", "type": "http", "url": rx.url})
        with Daemon(cfg, workdir) as daemon:
            start = time.monotonic()
            rx_started = 0.0
            rx_start_ns = 0
            count = 0
            try:
                while True:
                    now = time.monotonic() - start
                    samples.append((now, daemon.rss_mb()))
                    problem = daemon.problem() or (rx.problem() if rx_started else None)
                    if problem:
                        raise BenchTimeout(problem)
                    if not rx_started and now >= args.down:
                        rx.start()
                        rx_started = time.monotonic() - start
                        rx_start_ns = time.time_ns()
                        print(f"receiver started at t={rx_started:.1f}s "
                              f"(RSS so far: peak {max(s[1] for s in samples):.1f} MB)")
                    if rx_started:
                        count = rx.count()
                        if count >= n:
                            break
                    if now > args.down + timeout:
                        raise BenchTimeout(f"timed out after {timeout:.0f}s of drain: "
                                           f"{count:,} of {n:,} events arrived")
                    time.sleep(0.5)
                st = rx.stats()
                hwm = daemon.hwm_mb()
                cpu = daemon.cpu()
                rc = daemon.stop()
            finally:
                rx.stop()
        drain = (st["last_ns"] - rx_start_ns) / 1e9
        peak = max(s[1] for s in samples)
        print("RSS timeline (MB, every 5 s): " + ", ".join(
            f"{t:.0f}s {r:.0f}" for t, r in samples[::10]))
        print(f"\n{n:,} events: drained in {drain:.1f}s after the receiver came up "
              f"({n / drain:,.0f} events/s), receiver count {st['count']:,}, daemon "
              f"{cpu:.1f} CPU-s ({cpu / n * 1e6:.2f} per 1M), exit {rc}")
        print(f"peak VmRSS sampled {peak:.1f} MB, final VmHWM {hwm:.1f} MB "
              f"(target < {TARGET_RSS_MB:g} MB: {'OK' if hwm < TARGET_RSS_MB else 'MISSED'})")
    except BenchTimeout as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        if samples:
            print(f"RSS samples so far: peak {max(s[1] for s in samples):.1f} MB",
                  file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
