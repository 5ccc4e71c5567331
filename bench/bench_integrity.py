"""CPU cost of integrity (hash chain + signed digests) on the http path.

    .venv/bin/python bench/bench_integrity.py [--events 200000] [--runs 3]

Generates one journal (bench/gen_events.py), then alternates runs of the daemon with an
http sink to bench/receiver.py, integrity off and on ([integrity] with a fresh key,
digest_interval 300, digest_events 10000), each with a fresh state dir. Prints the
daemon's CPU seconds per million events (utime+stime, /proc) per run, the medians and
the overhead of integrity in percent; also the per-event cost of sealing alone on
redacted lines, in this process, per tier (the C extension with and without the CPU's
SHA extensions, the Python reference).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Daemon, Receiver, median, print_header, wait_until, write_config  # noqa: E402
from gen_events import write_events  # noqa: E402

from auditshipd.integrity.keys import generate_key  # noqa: E402


def run_once(journal_dir: Path, n: int, workdir: Path, key: Path | None) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    with Receiver(log=run_dir / "receiver.log") as rx:
        sink: dict[str, Any] = {"name": "bench", "type": "http", "url": rx.url}
        extra = ""
        if key is not None:
            sink["integrity"] = True
            extra = (f'[integrity]\nsigning_key = "{key}"\ndigest_interval = 300\n'
                     "digest_events = 10000\n")
        cfg = write_config(run_dir / "auditshipd.toml", journal_dir, run_dir / "state", sink,
                           extra)
        daemon = Daemon(cfg, run_dir)
        try:
            daemon.start()
            wait_until(lambda: rx.count() >= n, 60 + n / 2000, f"{n:,} events",
                       interval=0.05, alive=lambda: daemon.problem() or rx.problem())
            cpu = daemon.cpu()
            daemon.stop()
        finally:
            daemon.__exit__()
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"cpu_per_m": cpu / n * 1e6}


def seal_cost(journal: Path, n: int) -> dict[str, float]:
    """Microseconds per event to seal redacted lines, per tier: ``seal_lines`` with the
    C extension (SHA extensions, then portable SHA-256 when the CPU has them) and the
    Python reference ``seal`` (hashlib), in batches of 1,000 as the daemon seals them."""
    from auditshipd.integrity import chain
    from auditshipd.integrity.chain import ChainState, StreamChain
    from auditshipd.redaction.redactor import compile_policy

    redact = compile_policy(None).redact_line
    lines = [redact(x) for x in journal.read_bytes().splitlines()[:n]]
    batches = [lines[i:i + 1000] for i in range(0, len(lines), 1000)]

    def timed(use_c: bool) -> float:
        ch = StreamChain(ChainState(stream="bench"), use_c=use_c)
        t = time.process_time()
        for b in batches:
            ch.seal_lines(b)
        return (time.process_time() - t) / len(lines) * 1e6

    out: dict[str, float] = {}
    c = chain.chain_c()
    if c is not None:
        if c.accelerated():
            out["C, SHA extensions"] = timed(True)
            c.accelerated(False)
            out["C, portable SHA-256"] = timed(True)
            c.accelerated(True)
        else:
            out["C, portable SHA-256"] = timed(True)
    out["Python (hashlib)"] = timed(False)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    print_header()
    workdir = Path(tempfile.mkdtemp(prefix="auditshipd-bench-integrity-"))
    try:
        journal_dir = workdir / "journal"
        journal_dir.mkdir()
        size = write_events(str(journal_dir / "audit.jsonl"), args.events, args.seed)
        print(f"journal: {args.events:,} events, {size / args.events:.0f} B/event")
        key = workdir / "signing.key"
        generate_key(key)
        results: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(args.runs):
            for mode in ("off", "on"):
                r = run_once(journal_dir, args.events, workdir, key if mode == "on" else None)
                results[mode].append(r["cpu_per_m"])
                print(f"run {i + 1} integrity {mode:>3}: {r['cpu_per_m']:.2f} CPU-s/1M events")
        off, on = median(results["off"]), median(results["on"])
        print(f"median: off {off:.2f}, on {on:.2f} CPU-s/1M events:"
              f" integrity adds {100 * (on - off) / off:.1f}% CPU per event (target < 25%)")
        for tier, us in seal_cost(journal_dir / "audit.jsonl", 100_000).items():
            print(f"sealing alone, {tier}: {us:.2f} us/event (redacted lines)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
