"""auditshipd: tail an audit journal, redact every event, deliver it at least once to
sinks (SIEMs, S3, MQTT, webhooks, the built-in portal)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__
from .config.locate import add_config_option
from .errors import ConfigError
from .journal import cli as emit_cli
from .service import scaffold

if TYPE_CHECKING:
    from .delivery.replay import ReplayResult

__all__ = ["main", "replay_row"]


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# Commands that work on the daemon's state: they say which config and state dir they use
# and refuse to make a second, empty ./var (see config.locate).
_STATE_COMMANDS = frozenset({"emit", "token", "status", "dlq", "quarantine", "plugins", "portal"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditshipd", description=__doc__,
        epilog="Run 'auditshipd COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"auditshipd {__version__}")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                        help="least severe log messages shown, on stderr (default: info)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon",
                       description="Tail the journal, redact, and deliver to every sink until"
                       " SIGTERM; SIGHUP or an edit of the config reloads it.")
    add_config_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate the config and exit",
                       description="Validate the config, sink options and redaction policy;"
                       " list every problem found and exit 2, or exit 0 when valid. The"
                       " portal store's self-service streams are checked as the daemon would"
                       " start them and listed; one that would not run is logged with its"
                       " reason, without changing the exit status.")
    add_config_option(p)
    p.add_argument("--no-env", action="store_true",
                   help="an unset ${VAR} is a placeholder, not an error (check a config"
                   " where its secrets are not set)")
    p.add_argument("--check-connections", action="store_true",
                   help="also connect to each sink's endpoint (TCP, TLS handshake), sending"
                   " nothing, the self-service streams' included; exit 1 when one fails")
    p.set_defaults(func=cmd_check_config)

    emit_cli.add_parser(sub, add_config_option)
    scaffold.add_parser(sub)

    p = sub.add_parser("plugins", help="list discovered plugins and sink types")
    add_config_option(p)
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("dlq", help="list or replay dead-letter files")
    dsub = p.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    q = dsub.add_parser("list", help="dead letters per sink: records, events, bytes, last error")
    add_config_option(q)
    q.set_defaults(func=cmd_dlq_list)
    q = dsub.add_parser("replay", help="send a sink's dead letters again",
                        description="Send a sink's dead letters again; delivered ones are"
                        " removed, the others stay. Exit 1 when some stay.")
    add_config_option(q)
    q.add_argument("--sink", required=True, metavar="NAME", help="the sink whose letters to send")
    q.add_argument("--json", action="store_true",
                   help="print the result as JSON instead of a table")
    q.set_defaults(func=cmd_dlq_replay)

    p = sub.add_parser("quarantine", help="list the journal lines set aside as unshippable")
    qsub = p.add_subparsers(dest="quarantine_command", required=True, metavar="COMMAND")
    q = qsub.add_parser("list", help="quarantined lines: sink, when, file and offset, length, reason",
                        description="List the journal lines each sink set aside (invalid"
                        " JSON or UTF-8, not an object, a required field missing, over"
                        " max_line_bytes), oldest first, from the state dir's quarantine files.")
    add_config_option(q)
    q.add_argument("--sink", metavar="NAME", help="only this sink's (or stream's) records")
    q.add_argument("--json", action="store_true",
                   help="print each record as a JSON line, the line itself included")
    q.set_defaults(func=cmd_quarantine_list)

    # Imported here, not at the top, to keep `--version` quick; an import failure is a
    # broken install and surfaces as one, never as a silently missing command.
    from .integrity import cli as integrity_cli
    from .portal import cli as portal_cli
    from .redaction import cli as redact_cli
    from .service import status_cli

    for module in (redact_cli, status_cli, portal_cli, integrity_cli):
        module.add_parser(sub)
    return parser


def _locate(args: argparse.Namespace) -> None:
    """Resolve the config (``-c``, $AUDITSHIPD_CONFIG, /etc, ./config, default) in ``args``;
    commands on the daemon's state say which one they use."""
    from .config.locate import check_relative_dirs, describe, locate_config

    located = locate_config(getattr(args, "config", None))
    args.config = located.path
    if args.command in _STATE_COMMANDS:
        from .config import load_config

        config = load_config(located.path)
        print(describe(located, config), file=sys.stderr)
        if not getattr(args, "journal", None):
            check_relative_dirs(located, config)


def cmd_run(args: argparse.Namespace) -> int:
    # SIGHUP means "read the config again"; until the daemon's handler is installed
    # (after the imports below, before the config is first read) there is nothing to
    # reload, and the default action would kill the daemon: a `systemctl reload` or a
    # logrotate postrotate arriving while it starts would then fail the unit.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from .service.daemon import Daemon

    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        uvloop = None
    daemon = Daemon(args.config)
    if uvloop is not None:
        return uvloop.run(daemon.serve())
    return asyncio.run(daemon.serve())


def cmd_check_config(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from .config.env import unset_as_placeholder
    from .service.loading import load_runtime

    try:
        with unset_as_placeholder() if args.no_env else nullcontext():
            config, _pm, types = load_runtime(args.config)
    except ConfigError as exc:
        return _config_errors(exc)
    if config.stream_errors:
        found: list[ConfigError] = []
        for exc in config.stream_errors.values():
            found.extend(getattr(exc, "errors", [exc]))
        return _config_errors(found)
    print(f"{config.source}: OK ({len(config.sinks)} sink(s): "
          f"{', '.join(f'{s.name} ({s.type})' for s in config.sinks)})")
    # The organizations' own streams, saved in the portal's store: listed, and each one
    # that would not run here logged with its reason. They do not change the exit status
    # (they are not in this file; the portal shows their owners what is wrong).
    from .service.store_streams import check_store_streams

    streams, summary = asyncio.run(check_store_streams(config, types))
    if summary:
        print(summary)
    if not args.check_connections:
        return 0
    from .service.connections import check_connections

    results = asyncio.run(check_connections(dataclasses.replace(
        config, sinks=[*config.sinks, *streams])))
    for r in results:
        print(f"connection: {r}")
    return 1 if any(r.status == "failed" for r in results) else 0


def _config_errors(exc: ConfigError | list[ConfigError]) -> int:
    """Print every configuration error, one a line, and the count; exit status 2."""
    errors = exc if isinstance(exc, list) else getattr(exc, "errors", [exc])
    for e in errors:
        print(f"configuration error: {e}", file=sys.stderr)
    if len(errors) > 1:
        print(f"{len(errors)} configuration errors", file=sys.stderr)
    return 2


def cmd_plugins(args: argparse.Namespace) -> int:
    from .config import load_config
    from .plugins.manager import build_plugin_manager, sink_types

    config = load_config(args.config)
    pm = build_plugin_manager(config.plugin_dirs)
    print("plugins:")
    for name, _plugin in sorted(pm.list_name_plugin()):
        print(f"  {name}")
    print("sink types:")
    for name, st in sorted(sink_types(pm).items()):
        print(f"  {name:<12} {st.description}  [{st.plugin}]")
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from .delivery.deadletters import dlq_summary
    from .service.loading import load_runtime

    config, _, _ = load_runtime(args.config)
    rows = dlq_summary(config)
    print(f"{'SINK':<20} {'RECORDS':>8} {'EVENTS':>8} {'BYTES':>10}  LAST ERROR")
    for r in rows:
        print(f"{r['sink']:<20} {r['records']:>8} {r['events']:>8} {r['bytes']:>10}  "
              f"{r['last_error'] or ''}")
    for r in rows:
        if r["unreadable_lines"]:
            print(_unreadable_note(r["path"], r["unreadable_lines"]), file=sys.stderr)
    return 0


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    import msgspec

    from .config import load_config
    from .delivery.quarantine import quarantine_files

    config = load_config(args.config)
    files = [f for f in quarantine_files(config.state_dir) if args.sink in (None, f.sink)]
    encode = msgspec.json.Encoder().encode
    if not args.json:
        print(f"{'SINK':<20} {'QUARANTINED AT':<27} {'BYTES':>8}  FILE:OFFSET  REASON")
    for f in files:
        scan = f.scan()
        for r in scan.records:
            if args.json:
                sys.stdout.write(encode(r).decode() + "\n")
            else:
                print(f"{r.sink:<20} {r.quarantined_at:<27} {r.length:>8}  {r.path}:{r.offset}"
                      f"  {r.reason}")
        if scan.unreadable:
            print(_unreadable_note(str(f.path), scan.unreadable), file=sys.stderr)
    return 0


def _unreadable_note(path: str, lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
    return (f"{path}: {len(lines)} unreadable line(s) (line {shown}), kept as they are;"
            " a crash or a full disk cut an append: repair or move them by hand")


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from .delivery.deadletters import DeadLetterFile
    from .delivery.replay import replay
    from .progress import Progress
    from .service.loading import load_runtime

    config, _, types = load_runtime(args.config)
    try:
        sc = config.sink(args.sink)
    except KeyError:
        # An organization's self-service stream, saved in the portal's store.
        from .service.store_streams import store_stream_sink

        stream, why = asyncio.run(store_stream_sink(config, types, args.sink))
        if stream is None:
            print(f"{config.source}: {why}", file=sys.stderr)
            return 2
        config = dataclasses.replace(config, sinks=[*config.sinks, stream])
        sc = stream
    total = DeadLetterFile(config.state_dir, sc.name).count()[1]
    with Progress(total, f"replaying {sc.name}") as bar:
        result = asyncio.run(replay(config, args.sink, progress=bar.advance))
    from .scrub import scrub_secrets, sink_secrets

    row = replay_row(result, sink_secrets(sc))
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{'SINK':<20} {'REPLAYED RECORDS':>16} {'REPLAYED EVENTS':>15} "
              f"{'STILL DEAD':>10}  LAST ERROR")
        print(f"{row['sink']:<20} {row['records_replayed']:>16} {row['replayed']:>15} "
              f"{row['still_dead_lettered']:>10}  {row['last_error'] or ''}")
    if result.error is not None:
        print(f"replay of {sc.name} stopped: {scrub_secrets(result.error, sink_secrets(sc))}",
              file=sys.stderr)
    if result.letters_kept:
        print(f"{result.path}: {result.still_dead_lettered} event(s) in"
              f" {result.letters_kept} dead letter(s) stay", file=sys.stderr)
    if result.out_of_scope:
        print(f"{result.out_of_scope} of them not sent: their organization is not one of"
              f" the sink's ({', '.join(sc.organizations or ())}) or the letter does not"
              " show it", file=sys.stderr)
    if result.unreadable_lines:
        print(_unreadable_note(result.path, result.unreadable_lines), file=sys.stderr)
    return 0 if result.ok else 1


def replay_row(result: ReplayResult, secrets: Sequence[str] = ()) -> dict[str, object]:
    """What ``dlq replay`` prints for one sink: records and events replayed, events (and
    records) still dead-lettered, of them the events kept because they are not of the
    sink's organizations, the last error of what stays (secrets masked)."""
    from .scrub import scrub_secrets

    return {"sink": result.sink, "replayed": result.replayed,
            "records_replayed": result.records_replayed,
            "still_dead_lettered": result.still_dead_lettered,
            "records_still_dead_lettered": result.letters_kept,
            "out_of_scope": result.out_of_scope,
            "last_error": scrub_secrets(result.last_error, secrets)}


def main(argv: Sequence[str] | None = None) -> int:
    from .service.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command != "init":
            _locate(args)
        return args.func(args)
    except ConfigError as exc:
        return _config_errors(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
