"""``auditshipd emit``: record one audit event into the journal, from a shell.

It writes with the same code as applications (``AuditJournal.record``) and prints the
event's id on stdout, so a script can look the event up (portal, sink) afterwards.
Metadata values are strings (``--metadata plan=pro``) or, with ``:=``, JSON
(``--metadata seats:=5``, ``--metadata 'tags:=["a","b"]'``), as in HTTPie.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
from typing import Any

from ..timestamps import parse_rfc3339

__all__ = ["ACTION_PATTERN", "add_parser", "parse_metadata", "parse_occurred_at", "run"]

# Dot-separated lowercase words, as in WorkOS and most audit log schemas: user.invited,
# user.role_changed, scim.sync_completed. Receivers group and alert on these names, so a
# typo such as "User Invited" is refused here rather than shipped.
ACTION_PATTERN = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")
MAX_ACTION_LENGTH = 128
# parse_rfc3339 also takes a date alone or no zone (as UTC); a command line must be explicit.
_HAS_TIME = re.compile(r"\d[Tt ]\d")
_HAS_ZONE = re.compile(r"(?:[Zz]|[+-]\d{2}:?\d{2})$")


class UsageError(ValueError):
    """A value given on the command line is wrong; the message names the option."""


def add_parser(subparsers: Any, add_config: Any) -> None:
    p = subparsers.add_parser(
        "emit", help="record one audit event into the journal (prints its id)",
        description=(__doc__ or "").split("\n\n", 1)[1].strip().replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config(p)
    p.add_argument("action", help="what happened, lowercase words joined by dots"
                   " (user.invited, user.role_changed)")
    p.add_argument("--actor-email", required=True, metavar="EMAIL", help="email of who acted (required)")
    p.add_argument("--actor-name", metavar="NAME", help="display name of who acted")
    p.add_argument("--actor-type", default="user", metavar="TYPE",
                   help="kind of actor: user, api_key, directory... (default: user)")
    p.add_argument("--target-email", action="append", default=[], metavar="EMAIL",
                   help="email of a target acted on; repeat for several targets")
    p.add_argument("--target-type", default="user", metavar="TYPE",
                   help="kind of every --target-email target (default: user)")
    p.add_argument("--organization", metavar="SLUG",
                   help="slug of the customer organization the event belongs to")
    p.add_argument("--context-ip", metavar="IP",
                   help="IP address the action came from (context.location)")
    p.add_argument("--context-user-agent", metavar="UA",
                   help="user agent of the client (context.user_agent)")
    p.add_argument("--occurred-at", metavar="TIME",
                   help="when it happened, RFC 3339 with a time zone"
                   " (2026-11-25T10:00:00Z; default: now)")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE|KEY:=JSON",
                   help="one metadata entry: KEY=VALUE for a string, KEY:=JSON for a number,"
                   " boolean, list or object (seats:=5); repeat for several")
    p.add_argument("--journal", metavar="FILE",
                   help="journal file to append to (default: journal.path of the config)")
    p.set_defaults(func=run)


def check_action(action: str) -> str:
    if len(action) > MAX_ACTION_LENGTH or not ACTION_PATTERN.fullmatch(action):
        raise UsageError(
            f"action {action!r}: expected lowercase words (a-z, 0-9, _) joined by dots,"
            f" at most {MAX_ACTION_LENGTH} characters, e.g. user.invited"
        )
    return action


def parse_metadata(items: list[str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for item in items:
        # ":=" first: "n:=1" also contains "=".
        key, sep, raw = item.partition(":=")
        if sep and "=" not in key:
            try:
                value: Any = json.loads(raw)
            except ValueError as exc:
                raise UsageError(f"--metadata {key}:= : the value is not JSON ({exc.msg});"
                                 " quote strings, or use KEY=VALUE for text") from None
        else:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"--metadata {item!r}: expected KEY=VALUE or KEY:=JSON")
        if not key:
            raise UsageError(f"--metadata {item!r}: the key is empty")
        metadata[key] = value
    return metadata


def parse_occurred_at(text: str) -> _dt.datetime:
    """The instant of ``--occurred-at`` (aware, UTC): an RFC 3339 date and time with a zone."""
    value = text.strip()
    when = parse_rfc3339(value)
    if when is None or not _HAS_TIME.search(value):
        raise UsageError(f"--occurred-at {text!r}: expected an RFC 3339 time such as"
                         " 2026-11-25T10:00:00Z")
    if not _HAS_ZONE.search(value):
        raise UsageError(f"--occurred-at {text!r}: add a time zone (Z for UTC, or +02:00)")
    return when


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from .writer import daemon_journal, new_event_id

    try:
        action = check_action(args.action)
        metadata = parse_metadata(args.metadata)
        occurred_at = parse_occurred_at(args.occurred_at) if args.occurred_at else None
    except UsageError as exc:
        print(f"auditshipd emit: {exc}", file=sys.stderr)
        return 2
    path = args.journal or load_config(args.config).journal.path
    actor = {"type": args.actor_type, "email": args.actor_email}
    if args.actor_name:
        actor["name"] = args.actor_name
    context = {}
    if args.context_ip:
        context["location"] = args.context_ip
    if args.context_user_agent:
        context["user_agent"] = args.context_user_agent
    event_id = new_event_id()
    journal = daemon_journal(path)
    ok = journal.record(
        action, actor=actor,
        targets=[{"type": args.target_type, "email": e} for e in args.target_email],
        organization={"slug": args.organization} if args.organization else None,
        context=context or None,
        metadata=metadata or None,
        occurred_at=occurred_at,
        id=event_id,
    )
    journal.close()
    if not ok:
        print(f"auditshipd emit: could not write to {path} (see the log above)", file=sys.stderr)
        return 1
    print(event_id)
    return 0
