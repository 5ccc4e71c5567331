"""``auditshipd redact``: show what a policy lets out of the machine.

Reads JSON Lines on stdin, prints each event as it would leave (one line per event, in
``--format`` or the sink's format: native JSON, OCSF, ECS or CEF) and reports invalid
lines and dropped events on stderr with their line numbers.
Exit status 1 when there were any, 2 on a configuration error.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Iterator
from typing import Any

import msgspec

from ..config.locate import add_config_option
from ..errors import ConfigError, DropEvent
from ..progress import Progress

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Add the ``redact`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "redact",
        help="print what would leave the machine for events read on stdin",
        description="Apply the redaction policy to JSON Lines on stdin and print the result.",
    )
    add_config_option(p)
    p.add_argument("--sink", default=None,
                   help="use this sink's policy (its override, if any) and format")
    p.add_argument("--format", default=None, choices=("native", "ocsf", "ecs", "cef"),
                   help="print the events in this format (default: the sink's, else native)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``auditshipd redact``; returns the exit status."""
    from ..config import load_config
    from ..formats.registry import build_encoder
    from .redactor import compile_policy

    try:
        config = load_config(args.config)
        redactor = compile_policy(config.redaction, source=config.source)
        if getattr(args, "sink", None):
            try:
                sink = config.sink(args.sink)
            except KeyError:
                names = ", ".join(s.name for s in config.sinks) or "none"
                print(f"auditshipd redact: no sink named {args.sink!r} (sinks: {names})",
                      file=sys.stderr)
                return 2
            redactor = compile_policy(sink.redaction, source=config.source, base=redactor)
            fmt = args.format or sink.format
        else:
            fmt = getattr(args, "format", None) or "native"
        encoder = build_encoder(fmt, config.formats)
    except ConfigError as exc:
        print(f"auditshipd redact: {exc}", file=sys.stderr)
        return 2
    src = sys.stdin.buffer
    if sys.stdout.isatty():  # events go to the terminal: no bar in between them
        return redact_stream(redactor, src, sys.stdout.buffer, sys.stderr, encoder)
    with Progress(_input_size(src), "redacting", unit="bytes") as bar:
        return redact_stream(redactor, _counted(src, bar), sys.stdout.buffer, sys.stderr,
                             encoder)


def _input_size(src: Any) -> int:
    """Bytes left to read when stdin is a regular file (0: unknown, e.g. a pipe)."""
    try:
        st = os.fstat(src.fileno())
        return max(0, st.st_size - src.tell()) if stat.S_ISREG(st.st_mode) else 0
    except (OSError, ValueError, AttributeError):
        return 0


def _counted(src: Any, bar: Progress) -> Iterator[bytes]:
    for line in src:
        bar.advance(len(line))
        yield line


def redact_stream(redactor: Any, src: Any, out: Any, err: Any, encoder: Any = None) -> int:
    """Redact each line of ``src``; write it (in ``encoder``'s format when given) to ``out``.
    The encoder sees the redacted event only, as a sink's would."""
    decode = msgspec.json.Decoder().decode
    encode = msgspec.json.Encoder().encode
    problems = 0
    for number, line in enumerate(src, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            event = decode(line)
        except msgspec.DecodeError as exc:
            problems += 1
            print(f"line {number}: invalid JSON: {exc}", file=err)
            continue
        try:
            redacted = redactor(event)
        except DropEvent as exc:
            problems += 1
            print(f"line {number}: dropped: {exc.reason}", file=err)
            continue
        line = encode(redacted)
        if encoder is not None:
            line = encoder.encode(decode(line))  # exactly what the pipeline hands it
        out.write(line + b"\n")
    out.flush()
    return 1 if problems else 0
