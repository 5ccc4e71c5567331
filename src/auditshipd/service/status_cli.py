"""The ``auditshipd status`` command: the rows of :mod:`~auditshipd.service.status`, as a
table or JSON, once or refreshed until Ctrl-C.

Besides the sinks of the config and its stream files, it lists the self-service streams
an organization's admin saved in the portal's store (the daemon runs them as sinks named
``ORGANIZATION.NAME``). Their state comes from the same state-dir files as any sink's;
the store only says which streams exist: their secrets are never read. A store that does
not exist yet is not created; one that cannot be read is said on stderr, and the other
sinks are listed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Any

from ..config import Config, SinkConfig
from ..config.locate import add_config_option
from ..config.tables import BatchConfig, DeadLetterConfig, RetryConfig
from ..portal.backend import event_store, stream_store
from ..portal.pg_errors import describe
from ..portal.stream_defs import StreamDefinition
from ..scrub import scrub_secrets
from ..timestamps import now_rfc3339
from .status import sink_status
from .store_streams import SOURCE, STORE_TIMEOUT, readable_store

__all__ = ["add_parser", "cmd_status", "format_table", "store_stream_sinks"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="per-sink state, cursor, lag, dead letters")
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("-w", "--watch", action="store_true",
                   help="refresh until Ctrl-C (on a terminal: clear the screen and redraw;"
                   " otherwise: one table after another)")
    p.add_argument("--interval", type=_interval, default=2.0, metavar="S",
                   help="seconds between two refreshes with --watch (default: 2)")
    p.set_defaults(func=cmd_status)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def cmd_status(args: argparse.Namespace) -> int:
    from ..config import load_config

    config = load_config(args.config)
    if not getattr(args, "watch", False):
        sys.stdout.write(_render(config, args.json))
        return 0
    tty = sys.stdout.isatty()
    try:
        while True:
            if args.json:  # JSON lines: one compact object per refresh, terminal or not
                sys.stdout.write(_render(config, True, watch=True))
            elif tty:
                text = _render(config, False)
                header = f"auditshipd status, every {args.interval:g}s (Ctrl-C quits)\n\n"
                sys.stdout.write(_CLEAR + header + text)
            else:
                sys.stdout.write(f"-- {now_rfc3339()}\n{_render(config, False)}\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silence the exit flush)
        return 0


def _render(config: Config, as_json: bool, watch: bool = False) -> str:
    """The status as a table, or as JSON: indented, or (``watch``) one line with the
    time it was read."""
    streams = store_stream_sinks(config)
    rows = sink_status(dataclasses.replace(config, sinks=[*config.sinks, *streams])
                       if streams else config)
    if as_json:
        doc = {"config": config.source, "state_dir": str(config.state_dir), "sinks": rows}
        if watch:
            return json.dumps({"time": now_rfc3339(), **doc}, separators=(",", ":")) + "\n"
        return json.dumps(doc, indent=2) + "\n"
    return format_table(rows)


def store_stream_sinks(config: Config) -> list[SinkConfig]:
    """The self-service streams of ``config``'s portal store, as sinks to list (a paused
    one disabled): name, type, organization and start only, no options. Streams whose
    name a configured sink has are left out: the daemon does not run them either."""
    database = readable_store(config)
    if database is None:
        return []
    try:
        defs = asyncio.run(asyncio.wait_for(_definitions(database), STORE_TIMEOUT))
    except Exception as exc:  # noqa: BLE001 - the configured sinks are listed regardless
        reason = (f"no answer within {STORE_TIMEOUT:g} s" if isinstance(exc, TimeoutError)
                  else scrub_secrets(describe(exc)))
        print(f"auditshipd status: self-service streams not listed: the portal store"
              f" cannot be read: {reason}", file=sys.stderr)
        return []
    taken = {s.name for s in config.sinks}
    return [_listed(d) for d in defs if d.sink_name not in taken]


async def _definitions(database: str) -> list[StreamDefinition]:
    events = event_store(database)
    await events.open()
    try:
        return await stream_store(events).list()
    finally:
        await events.close()


def _listed(d: StreamDefinition) -> SinkConfig:
    return SinkConfig(name=d.sink_name, type=d.type, options=None, enabled=not d.paused,
                      concurrency=1, start_at=d.created_at, organizations=[d.organization],
                      redaction=None, batch=BatchConfig(), retry=RetryConfig(),
                      dead_letter=DeadLetterConfig(), stream_org=d.organization, source=SOURCE)


def format_table(rows: list[dict[str, Any]]) -> str:
    out = [f"{'SINK':<20} {'TYPE':<10} {'STATE':<9} {'LAG BYTES':>10} {'LAG EVENTS':>11} "
           f"{'DELIVERED':>10} {'DEAD':>6} {'QUAR':>6}  LAST SUCCESS"]
    for r in rows:
        events = f"{'' if r['lag_events_exact'] else '~'}{r['lag_events']}"
        out.append(
            f"{r['name']:<20} {r['type']:<10} {r['state']:<9} {r['lag_bytes']:>10} "
            f"{events:>11} {r['delivered']:>10} {r['dead_letter_count']:>6} "
            f"{r['quarantine_count']:>6}  {r['last_success_at'] or '-'}")
        if r["last_error"] and r.get("last_error_resolved_at"):
            out.append(f"  last error (resolved) at {r['last_error_at']}: {r['last_error']}"
                       f" (delivering again since {r['last_error_resolved_at']})")
        elif r["last_error"]:
            out.append(f"  last error ({r['last_error_at']}): {r['last_error']}")
        if r.get("persist_error"):
            out.append(f"  state dir ({r['persist_error_at']}): {r['persist_error']}")
        if r.get("cursor_error"):
            out.append(f"  cursor: {r['cursor_error']}")
    return "\n".join(out) + "\n"
