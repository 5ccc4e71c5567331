"""``auditshipd keygen`` and ``auditshipd verify``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add the ``keygen`` and ``verify`` subcommands to argparse ``subparsers``."""
    p = subparsers.add_parser(
        "keygen", help="write a new Ed25519 signing key and print its public key",
        description="Write a new Ed25519 private key (mode 0600) to FILE, its public key"
                    " to FILE.pub, and print the public key and its key id.")
    p.add_argument("--out", required=True, metavar="FILE", help="private key file to create")
    p.set_defaults(func=run_keygen)

    p = subparsers.add_parser(
        "verify", help="check a stream or an export for tampering (offline)",
        description="Verify the hash chain, the sequence and the signed digests of a"
                    " stream, or the signed manifest of a portal export. Exit 0 when intact,"
                    " 1 naming each problem.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="file-sink output, a directory of S3 objects, an export, '-' = stdin")
    p.add_argument("--public-key", action="append", default=[], metavar="FILE",
                   help="a trusted public key (PEM or base64); repeat for rotated keys")
    p.add_argument("--now", default=None, metavar="TIME",
                   help="RFC 3339 time the tail must be covered at (default: now)")
    p.add_argument("--allow-reorder", action="store_true",
                   help="accept events that arrive after later ones (concurrency > 1,"
                        " dead letters replayed)")
    p.add_argument("--stream", default=None, help="expected stream name")
    p.set_defaults(func=run_verify)


def run_keygen(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .keys import generate_key

    try:
        key = generate_key(args.out)
    except FileExistsError:
        print(f"auditshipd keygen: {args.out} exists; not overwritten", file=sys.stderr)
        return 2
    except (OSError, ConfigError) as exc:
        print(f"auditshipd keygen: {args.out}: {exc}", file=sys.stderr)
        return 2
    public = key.public
    print(f"key id: {key.key_id}")
    print(f"public key (base64): {public.base64()}")
    print(f"public key written to {args.out}.pub:")
    print(public.pem(), end="")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..progress import Progress
    from ..timestamps import parse_time
    from .keys import load_public_key
    from .sources import iter_records, list_inputs
    from .verify import StreamVerifier

    try:
        keys = [load_public_key(p) for p in args.public_key]
    except (ValueError, ConfigError) as exc:
        print(f"auditshipd verify: {exc}", file=sys.stderr)
        return 2
    now = None
    if args.now is not None:
        now = parse_time(args.now)
        if now is None:
            print(f"auditshipd verify: --now {args.now!r}: not an RFC 3339 time",
                  file=sys.stderr)
            return 2
    files = list_inputs(args.paths)
    missing = [f for f in files if f != "-" and not os.path.isfile(f)]
    if missing:
        print(f"auditshipd verify: {missing[0]}: no such file", file=sys.stderr)
        return 2
    # A directory without a file to read verifies nothing: not "intact".
    empty = [p for p in args.paths if p != "-" and os.path.isdir(p) and not list_inputs([p])]
    if empty:
        print(f"auditshipd verify: no files to verify in {empty[0]}", file=sys.stderr)
        return 2
    exports = [f for f in files if f != "-" and _has_manifest(f)]
    streams = [f for f in files if f not in exports]
    problems: list[str] = []
    summaries: list[str] = []
    if exports:
        from .manifest import verify_export

        for f in exports:
            result = verify_export(f, keys)
            (summaries if result.ok else problems).extend(result.lines())
    if streams:
        total = sum(os.path.getsize(f) for f in streams if f != "-")
        verifier = StreamVerifier(keys, now=now, allow_reorder=args.allow_reorder,
                                  stream=args.stream)
        with Progress(total if total > 1 << 20 else 0, "verifying", unit="bytes") as bar:
            bar.enabled = bar.enabled and total > 1 << 20
            for f in streams:
                for where, record, error, nbytes in iter_records(f):
                    if error is not None:
                        verifier.add_unreadable(where, error)
                    else:
                        verifier.add(record, where)
                    bar.advance(nbytes)
        report = verifier.finish()
        problems.extend(str(p) for p in report.problems)
        summaries.append(report.summary())
    for line in problems:
        print(line)
    if problems:
        print(f"FAILED: {len(problems)} problem(s)")
        return 1
    for line in summaries:
        print(line)
    return 0


def _has_manifest(path: str) -> bool:
    from .sources import MANIFEST_SUFFIX

    return os.path.isfile(path + MANIFEST_SUFFIX)
