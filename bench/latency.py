"""End-to-end latency at a fixed event rate: writer -> journal -> daemon -> http receiver.

    .venv/bin/python bench/latency.py [--rates 1000,10000] [--seconds 30]

Per rate: a fresh journal and state dir, the receiver (bench/receiver.py --latency) and
``auditshipd run`` with one http sink (default batch settings: 1000 events / 4 MiB /
0.1 s; default redaction policy). Once the daemon is up, this process writes events
with ``AuditJournal.record`` at the fixed rate for the duration. Each event carries
``metadata.t_ns = time.time_ns()`` taken just before ``record()`` (``occurred_at``
has only millisecond precision); the receiver records ``arrival - t_ns`` per event.
Prints p50 / p90 / p99 / max in milliseconds. ``t_ns`` (a plain integer) survives the
default redaction policy: checked at start with ``auditshipd redact``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    BenchTimeout,
    Daemon,
    Receiver,
    print_header,
    wait_until,
    write_config,
)
from gen_events import EventFactory

from auditshipd import AuditJournal

__all__ = ["main"]

TARGET_P99_MS_AT_1000 = 250.0


def check_t_ns_survives() -> None:
    event = {"id": "01KAG7VWM0CAYJ9ETTCDQ0YW8N", "action": "user.invited",
             "occurred_at": "2025-11-20T09:00:00.000Z", "version": 1,
             "actor": {"type": "user"}, "metadata": {"t_ns": time.time_ns()}}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-m", "auditshipd.cli", "redact"],
                         input=msgspec.json.encode(event) + b"\n", capture_output=True,
                         timeout=60, env=env, check=True).stdout
    got = msgspec.json.decode(out.splitlines()[0])
    if got.get("metadata", {}).get("t_ns") != event["metadata"]["t_ns"]:
        raise SystemExit(f"metadata.t_ns does not survive the default redaction policy: {out!r}")


def pct(sorted_values: list[int], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k] / 1e6


def run_rate(rate: int, seconds: float, workdir: Path) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"lat-{rate}-", dir=workdir))
    journal_dir = run_dir / "journal"
    journal_dir.mkdir()
    factory = EventFactory(seed=rate)
    templates = [factory.event(i) for i in range(2000)]
    with Receiver(latency=True, log=run_dir / "receiver.log") as rx:
        cfg = write_config(run_dir / "auditshipd.toml", journal_dir, run_dir / "state",
                           {"name": "bench", "type": "http", "url": rx.url})
        with Daemon(cfg, run_dir) as daemon:
            daemon.wait_started()
            journal = AuditJournal(journal_dir / "audit.jsonl")
            written = 0
            start = time.perf_counter()
            end = start + seconds
            record = journal.record
            while True:
                now = time.perf_counter()
                if now >= end:
                    break
                due = min(int((now - start) * rate), int(seconds * rate))
                while written < due:
                    e = templates[written % len(templates)]
                    meta = dict(e["metadata"])
                    meta["t_ns"] = time.time_ns()
                    if not record(e["action"], actor=e["actor"], targets=e["targets"],
                                  organization=e["organization"], context=e["context"],
                                  metadata=meta):
                        raise BenchTimeout("AuditJournal.record failed")
                    written += 1
                if daemon.problem():
                    raise BenchTimeout(daemon.problem() or "")
                time.sleep(0.0005)
            elapsed = time.perf_counter() - start
            journal.close()
            wait_until(lambda: rx.count() >= written, 60, f"{written:,} events at the receiver",
                       interval=0.05, alive=lambda: daemon.problem() or rx.problem())
            cpu = daemon.cpu()
            hwm = daemon.hwm_mb()
            daemon.stop()
        lat = sorted(rx.latencies_ns())
        count = rx.count()
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"rate": rate, "written": written, "achieved": written / elapsed, "count": count,
            "timed": len(lat), "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99),
            "max": lat[-1] / 1e6 if lat else float("nan"), "cpu": cpu, "hwm": hwm,
            "seconds": elapsed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,10000")
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args(argv)
    rates = [int(x) for x in args.rates.split(",") if x.strip()]
    print_header()
    check_t_ns_survives()
    print("metadata.t_ns survives the default redaction policy")
    workdir = Path(tempfile.mkdtemp(prefix="auditshipd-latency-"))
    try:
        for rate in rates:
            r = run_rate(rate, args.seconds, workdir)
            verdict = ""
            if rate == 1000:
                ok = r["p99"] < TARGET_P99_MS_AT_1000
                verdict = f" (target p99 < {TARGET_P99_MS_AT_1000:g} ms: {'OK' if ok else 'MISSED'})"
            print(f"{rate:>6,} events/s for {r['seconds']:.0f}s (achieved {r['achieved']:,.0f}/s, "
                  f"{r['written']:,} written, {r['count']:,} received, {r['timed']:,} timed): "
                  f"p50 {r['p50']:.1f} ms, p90 {r['p90']:.1f} ms, p99 {r['p99']:.1f} ms, "
                  f"max {r['max']:.1f} ms{verdict}; daemon {r['cpu']:.1f} CPU-s, "
                  f"peak RSS {r['hwm']:.1f} MB")
    except BenchTimeout as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
