"""Throughput of ``auditshipd run``: journal -> default redaction -> http (or file) sink.

    .venv/bin/python bench/throughput.py [--events 1000000] [--runs 3] [--sink http|file|both]
                                         [--profile /tmp/daemon.prof]
                                         [--formats native,ocsf,ecs,cef]

Generates the journal once (bench/gen_events.py) in a temp dir, then per run and sink:
a fresh state dir, a fresh receiver process (bench/receiver.py) for the http sink, the
daemon as ``python -m auditshipd.cli run -c CONFIG`` (one sink, default batch settings,
no [redaction] table: the default policy), wait until every event arrived, sample the
daemon's CPU (/proc/PID/stat utime+stime, all threads) and peak RSS (VmHWM) just
before SIGTERM. Prints per run and the medians:

- events/s (wall): from the daemon's start (Popen, Python start-up included) to the
  last event's arrival; "steady" is first to last arrival;
- daemon CPU seconds per million events; peak RSS; the receiver's count.

``--formats``: instead of the sinks above, the http sink once per format per run (the
sink's ``format`` key; CEF with ``encoding = "ndjson"``, a text body), and each format's
daemon CPU per event against ``native`` (target: under +50%); then, in this process, each
format's ``encode_lines`` per event with its C tier and with its Python tier.

Also measured in the same invocation: the receiver alone (this process blasting
pre-built batches at it: it must be far faster than the daemon) and the bare msgspec
loop (decode + strip internal ids + encode, no I/O), with the ratio daemon/bare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchTimeout,
    Daemon,
    Receiver,
    cpu_seconds,
    median,
    print_header,
    write_config,
)
from gen_events import write_events

__all__ = ["bare_loop", "main"]

TARGET_RATE = 150_000
TARGET_CPU = 6.0
TARGET_RATIO = 0.5


# -- the bare loop ---------------------------------------------------------------------

def strip_ids(e: dict[str, Any]) -> dict[str, Any]:
    """Drop actor.id, organization.id, targets[].id, context.session_id and metadata
    keys ending in _id (at any depth of metadata): internal ids stripped, nothing else."""
    a = e.get("actor")
    if a:
        a.pop("id", None)
    o = e.get("organization")
    if o:
        o.pop("id", None)
    for t in e.get("targets") or ():
        t.pop("id", None)
    c = e.get("context")
    if c:
        c.pop("session_id", None)
    m = e.get("metadata")
    if m:
        _strip_meta(m)
    return e


def _strip_meta(m: dict[str, Any]) -> None:
    for k in [k for k in m if k.endswith("_id")]:
        del m[k]
    for v in m.values():
        if type(v) is dict:
            _strip_meta(v)


def bare_loop(data: bytes, batch: int = 1000) -> tuple[int, float, float, int]:
    """decode + strip + encode every line, joined into JSON-array bodies of ``batch``
    events (as the http sink sends them). Returns (events, wall s, cpu s, body bytes)."""
    lines = data.splitlines()
    decode = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
    out_bytes = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for start in range(0, len(lines), batch):
        body = b"[" + b",".join([encode(strip_ids(decode(x))) for x in lines[start:start + batch]]) + b"]"
        out_bytes += len(body)
    return len(lines), time.perf_counter() - t0, time.process_time() - c0, out_bytes


# -- the receiver alone ----------------------------------------------------------------

async def _blast(url: str, bodies: list[bytes], per_body: int, total: int, concurrency: int,
                 timeout: float) -> None:
    import aiohttp

    sent = 0
    lock = asyncio.Lock()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        i = 0
        while True:
            async with lock:
                if sent >= total:
                    return
                sent += per_body
            body = bodies[i % len(bodies)]
            i += 1
            async with session.post(url, data=body,
                                    headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"receiver answered {r.status}")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.wait_for(asyncio.gather(*(worker(session) for _ in range(concurrency))),
                               timeout)


def receiver_alone(data: bytes, events: int, workdir: Path) -> dict[str, float]:
    lines = data.splitlines()[:20_000]
    enc, dec = msgspec.json.Encoder().encode, msgspec.json.Decoder().decode
    red = [enc(strip_ids(dec(x))) for x in lines]
    bodies = [b"[" + b",".join(red[i:i + 1000]) + b"]" for i in range(0, len(red), 1000)]
    total = max(1000, events // 1000 * 1000)
    with Receiver(log=workdir / "receiver-alone.log") as rx:
        assert rx.proc is not None
        c0 = cpu_seconds(rx.proc.pid)
        asyncio.run(_blast(rx.url, bodies, 1000, total, 4, 60 + total / 20_000))
        st = rx.stats()
        cpu = cpu_seconds(rx.proc.pid) - c0
    if st["count"] != total:
        raise BenchTimeout(f"receiver counted {st['count']} of {total} blasted events")
    wall = (st["last_ns"] - st["first_ns"]) / 1e9
    return {"events": total, "rate": total / wall if wall > 0 else float("inf"),
            "cpu_per_m": cpu / total * 1e6}


# -- one daemon run ----------------------------------------------------------------------

def _count_lines(path: Path, state: dict[str, int]) -> int:
    """Newlines in ``path``, reading only what was appended since the last call."""
    try:
        with open(path, "rb") as f:
            f.seek(state.get("pos", 0))
            while True:
                block = f.read(8 << 20)
                if not block:
                    break
                state["n"] = state.get("n", 0) + block.count(b"\n")
                state["pos"] = state.get("pos", 0) + len(block)
    except FileNotFoundError:
        pass
    return state.get("n", 0)


def run_once(kind: str, journal_dir: Path, n: int, workdir: Path, timeout: float,
             profile: Path | None = None, fmt: str = "native") -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{kind}-", dir=workdir))
    state_dir = run_dir / "state"
    rx: Receiver | None = None
    if kind == "http":
        rx = Receiver(log=run_dir / "receiver.log").start()
        sink: dict[str, Any] = {"name": "bench", "type": "http", "url": rx.url}
        if fmt != "native":
            sink["format"] = fmt
            if fmt == "cef":
                sink["encoding"] = "ndjson"
    else:
        out = run_dir / "out" / "audit.jsonl"
        sink = {"name": "bench", "type": "file", "path": str(out)}
    cfg = write_config(run_dir / "auditshipd.toml", journal_dir, state_dir, sink)
    daemon = Daemon(cfg, run_dir, profile=profile)
    try:
        rx_cpu0 = cpu_seconds(rx.proc.pid) if rx and rx.proc else 0.0
        daemon.start()
        if rx is not None:
            def done() -> bool:
                return rx.count() >= n
            alive = lambda: daemon.problem() or rx.problem()  # noqa: E731
        else:
            counter: dict[str, int] = {}

            def done() -> bool:
                return _count_lines(out, counter) >= n
            alive = daemon.problem
        try:
            from _common import wait_until

            wait_until(done, timeout, f"{n:,} events at the {kind} sink", interval=0.05,
                       alive=alive)
        except BenchTimeout:
            got = rx.count() if rx is not None else _count_lines(out, counter)
            print(f"  ! {kind}: only {got:,} of {n:,} events arrived; daemon log tail:\n"
                  f"{daemon.log_tail()}", file=sys.stderr)
            raise
        cpu = daemon.cpu()
        hwm = daemon.hwm_mb()
        if rx is not None:
            st = rx.stats()
            count, last_ns, first_ns = st["count"], st["last_ns"], st["first_ns"]
            rx_cpu = (cpu_seconds(rx.proc.pid) - rx_cpu0) if rx.proc else 0.0
        else:
            count = _count_lines(out, counter)
            last_ns = out.stat().st_mtime_ns
            first_ns = 0
            rx_cpu = 0.0
        rc = daemon.stop()
    finally:
        daemon.__exit__()
        if rx is not None:
            rx.stop()
    wall = (last_ns - daemon.start_ns) / 1e9
    res = {"kind": kind, "count": count, "wall": wall, "rate": n / wall, "cpu": cpu,
           "cpu_per_m": cpu / n * 1e6, "hwm_mb": hwm, "rc": rc, "rx_cpu_per_m": rx_cpu / n * 1e6}
    if first_ns:
        res["steady"] = n / max(1e-9, (last_ns - first_ns) / 1e9)
    if rc != 0:
        print(f"  ! daemon exited with {rc}; log tail:\n{daemon.log_tail()}", file=sys.stderr)
    shutil.rmtree(run_dir, ignore_errors=True)
    return res


def _fmt_run(r: dict[str, Any]) -> str:
    steady = f", steady {r['steady']:,.0f}/s" if "steady" in r else ""
    rx = f", receiver {r['rx_cpu_per_m']:.2f} CPU-s/1M" if r["kind"] == "http" else ""
    return (f"{r['rate']:>9,.0f} events/s (wall {r['wall']:.2f}s{steady}), "
            f"{r['cpu_per_m']:.2f} CPU-s/1M, peak RSS {r['hwm_mb']:.1f} MB, "
            f"count {r['count']:,}{rx}")


def _print_profile(path: Path, n: int = 15) -> None:
    import pstats

    for key in ("cumulative", "tottime"):
        print(f"\n--- daemon profile, top {n} by {key} ({path}) ---")
        pstats.Stats(str(path)).sort_stats(key).print_stats(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sink", choices=("http", "file", "both"), default="both")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=0.0,
                    help="seconds to wait for all events per run (default 60 + events/5000)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="one extra http run with the daemon under cProfile; write stats here")
    ap.add_argument("--skip-receiver-alone", action="store_true")
    ap.add_argument("--formats", default=None,
                    help="comma-separated formats for the http sink (e.g. native,ocsf,ecs,cef)")
    args = ap.parse_args(argv)
    if args.formats:
        return formats_main(args)
    n = args.events
    timeout = args.timeout or 60 + n / 5000
    print_header()
    workdir = Path(tempfile.mkdtemp(prefix="auditshipd-bench-"))
    try:
        journal_dir = workdir / "journal"
        journal_dir.mkdir()
        t0 = time.perf_counter()
        size = write_events(str(journal_dir / "audit.jsonl"), n, args.seed)
        print(f"journal: {n:,} events, {size / 1e6:.1f} MB ({size / n:.0f} B/event), "
              f"generated in {time.perf_counter() - t0:.1f}s")
        data = (journal_dir / "audit.jsonl").read_bytes()

        bare = []
        for _ in range(max(1, min(args.runs, 3))):
            ev, wall, cpu, _out = bare_loop(data)
            bare.append((ev / wall, cpu / ev * 1e6))
            print(f"bare loop: {ev / wall:,.0f} events/s, {cpu / ev * 1e6:.2f} CPU-s/1M")
        bare_rate = median([b[0] for b in bare])
        bare_cpu = median([b[1] for b in bare])

        if not args.skip_receiver_alone and args.sink in ("http", "both"):
            ra = receiver_alone(data, n, workdir)
            print(f"receiver alone: {ra['rate']:,.0f} events/s ({ra['events']:,} events in "
                  f"1000-event JSON arrays, 4 connections from one Python client), receiver "
                  f"{ra['cpu_per_m']:.2f} CPU-s/1M")
        del data

        kinds = ["http", "file"] if args.sink == "both" else [args.sink]
        results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for i in range(args.runs):
            for kind in kinds:
                r = run_once(kind, journal_dir, n, workdir, timeout)
                results[kind].append(r)
                print(f"run {i + 1} {kind:>4}: {_fmt_run(r)}")

        print(f"\n=== medians of {args.runs} run(s), {n:,} events, load now {os.getloadavg()[0]:.2f} ===")
        print(f"bare loop: {bare_rate:,.0f} events/s, {bare_cpu:.2f} CPU-s/1M")
        for kind, rs in results.items():
            rate = median([r["rate"] for r in rs])
            cpu = median([r["cpu_per_m"] for r in rs])
            hwm = median([r["hwm_mb"] for r in rs])
            ratio = rate / bare_rate
            cpu_ratio = bare_cpu / cpu  # the same comparison per CPU-second (load-independent)
            print(f"{kind:>4} sink: {rate:,.0f} events/s (target >= {TARGET_RATE:,}: "
                  f"{'OK' if rate >= TARGET_RATE else 'MISSED'}), {cpu:.2f} CPU-s/1M (target <= "
                  f"{TARGET_CPU:g}: {'OK' if cpu <= TARGET_CPU else 'MISSED'}), peak RSS "
                  f"{hwm:.1f} MB, daemon/bare = {ratio:.2f} (target >= {TARGET_RATIO}: "
                  f"{'OK' if ratio >= TARGET_RATIO else 'MISSED'}; per CPU-second "
                  f"{cpu_ratio:.2f}), counts {[r['count'] for r in rs]}")

        if args.profile is not None and "http" in kinds:
            args.profile.unlink(missing_ok=True)
            r = run_once("http", journal_dir, n, workdir, timeout * 3, profile=args.profile)
            print(f"\nprofiled http run (cProfile slows it down): {_fmt_run(r)}")
            if args.profile.exists():
                _print_profile(args.profile)
            else:
                print("  ! no profile written (did the daemon exit cleanly?)", file=sys.stderr)
    except BenchTimeout as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def formats_main(args: argparse.Namespace) -> int:
    """CPU per event of the http path for each format, against native."""
    n = args.events
    timeout = args.timeout or 60 + n / 5000
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if "native" not in formats:
        formats.insert(0, "native")
    print_header()
    workdir = Path(tempfile.mkdtemp(prefix="auditshipd-bench-"))
    try:
        journal_dir = workdir / "journal"
        journal_dir.mkdir()
        size = write_events(str(journal_dir / "audit.jsonl"), n, args.seed)
        print(f"journal: {n:,} events, {size / 1e6:.1f} MB ({size / n:.0f} B/event)")
        results: dict[str, list[dict[str, Any]]] = {f: [] for f in formats}
        for i in range(args.runs):
            for fmt in formats:  # interleaved: the machine's load weighs on each alike
                r = run_once("http", journal_dir, n, workdir, timeout, fmt=fmt)
                results[fmt].append(r)
                print(f"run {i + 1} {fmt:>6}: {_fmt_run(r)}")
        base = median([r["cpu_per_m"] for r in results["native"]])
        print(f"\n=== http sink, medians of {args.runs} run(s), {n:,} events, "
              f"load now {os.getloadavg()[0]:.2f} ===")
        for fmt, rs in results.items():
            cpu = median([r["cpu_per_m"] for r in rs])
            rate = median([r["rate"] for r in rs])
            extra = (cpu - base) / base * 100
            verdict = "" if fmt == "native" else (
                f" (target < +50%: {'OK' if extra < 50 else 'MISSED'})")
            print(f"{fmt:>6}: {cpu:.2f} CPU-s/1M, {rate:,.0f} events/s, "
                  f"{extra:+.0f}% CPU per event vs native{verdict}, "
                  f"counts {[r['count'] for r in rs]}")
        encode_costs(journal_dir / "audit.jsonl", [f for f in formats if f != "native"])
    except BenchTimeout as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def encode_costs(journal: Path, formats: list[str], n: int = 30_000) -> None:
    """In this process: each format's encode_lines on redacted lines (batches of 1,000),
    with the C tier and with the Python tier only (AUDITSHIPD_FORMATS_C=0), alternated."""
    from auditshipd.formats import fastpath
    from auditshipd.formats.registry import build_encoder
    from auditshipd.redaction.redactor import compile_policy

    redact = compile_policy(None).redact_line
    with open(journal, "rb") as f:
        lines = [redact(x) for x in f.read().splitlines()[:n]]
    batches = [lines[i:i + 1000] for i in range(0, len(lines), 1000)]
    c = fastpath.formats_c()
    print(f"\nencode_lines in-process, us/event on {len(lines):,} redacted lines "
          f"(C tier {'built' if c is not None else 'NOT built'}):")
    for fmt in formats:
        enc = build_encoder(fmt)
        tiers = {"C": c, "Python": None} if c is not None else {"Python": None}
        cost: dict[str, list[float]] = {t: [] for t in tiers}
        for _ in range(3):
            for tier, mod in tiers.items():
                enc._c = mod  # the same encoder, its caches warm, with and without C
                t = time.process_time()
                for b in batches:
                    enc.encode_lines(b)
                cost[tier].append((time.process_time() - t) / len(lines) * 1e6)
        print(f"{fmt:>6}: " + ", ".join(f"{t} {median(v):.2f}" for t, v in cost.items()))


if __name__ == "__main__":
    sys.exit(main())
