"""``auditshipd portal`` and ``auditshipd token create|list|revoke``.

:mod:`auditshipd.cli` calls :func:`add_parser` with its subparsers; each command sets
``func(args) -> int``.

A token is a credential to the audit log, so its creation and revocation are audit
events themselves (``portal_token.created`` / ``portal_token.revoked``), recorded in the
config's journal: who ran the command, the token's name, role and organization, never the
token or its hash. An organization's token is recorded in that organization's log (its
admins and streams see it); a token of every organization in the operators' log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..config import load_config
from ..config.locate import add_config_option
from ..errors import AuditshipdError
from .config import parse_listen, portal_config
from .tokens import ROLES, TokenError, legacy_token_path

__all__ = ["add_parser"]

T = TypeVar("T")


def add_parser(subparsers: Any) -> None:
    """Add the ``portal`` and ``token`` commands."""
    portal = subparsers.add_parser("portal", help="serve the audit log portal alone")
    add_config_option(portal)
    portal.add_argument("--listen", metavar="HOST:PORT", help="override portal.listen")
    portal.add_argument("action", nargs="?", choices=["serve", "migrate", "reindex"],
                        default="serve",
                        help="serve (default); migrate: apply the PostgreSQL schema migrations;"
                             " reindex: rebuild the PostgreSQL keyword vectors of stored events")
    portal.set_defaults(func=run_portal)

    token = subparsers.add_parser("token", help="manage portal access tokens")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    create = token_sub.add_parser("create", help="create a token (printed once)")
    add_config_option(create)
    create.add_argument("--name", required=True, help="who or what the token is for (unique)")
    create.add_argument("--role", required=True, choices=ROLES,
                        help="what the token may do: " + ", ".join(ROLES))
    create.add_argument("--organization", default="*",
                        help="organization slug the token may see, or '*' for all (default)")
    create.set_defaults(func=token_create)
    listing = token_sub.add_parser("list", help="list tokens (never their values)")
    add_config_option(listing)
    listing.set_defaults(func=token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token by name or id")
    add_config_option(revoke)
    revoke.add_argument("name_or_id", metavar="NAME_OR_ID",
                        help="the token's name or id (auditshipd token list)")
    revoke.set_defaults(func=token_revoke)


async def _with_tokens(config: Any, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action(tokens)`` on the token store of ``[portal] database`` (SQLite or
    PostgreSQL), after importing an earlier version's token file once."""
    from .auth_store import import_token_file
    from .backend import auth_store, event_store, is_postgres_url, safe_location

    database = portal_config(config).database
    store = event_store(database)
    try:
        await store.open()
    except Exception as exc:  # noqa: BLE001 - said with the store it concerns
        where = safe_location(database) if is_postgres_url(database) else database
        raise AuditshipdError(f"cannot open the portal store {where}: {_describe(exc)}") from None
    try:
        tokens = auth_store(store)
        await import_token_file(tokens, legacy_token_path(config))
        return await action(tokens)
    finally:
        await store.close()


def _run_tokens(config: Any, action: Callable[[Any], Awaitable[T]]) -> T:
    return asyncio.run(_with_tokens(config, action))


def _command_user() -> str:
    """Who ran the command: the caller of sudo, else the login name (else the uid)."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no name for this uid (a container)
        return f"uid {os.getuid()}"


def _record_token(config: Any, action: str, name: str, role: str, organization: str) -> None:
    """``portal_token.<action>`` in the config's journal (see the module docstring); a
    journal that cannot be written is said on stderr (the token change stands)."""
    from ..journal.writer import daemon_journal

    journal = daemon_journal(config.journal.path)
    try:
        ok = journal.record(
            f"portal_token.{action}",
            actor={"type": "os_user", "name": _command_user()},
            targets=[{"type": "portal_token", "name": name}],
            organization=None if organization == "*" else {"slug": organization},
            metadata={"role": role, "organization": organization},
        )
    finally:
        journal.close()
    if not ok:
        print(f"auditshipd: token {name!r} {action}, but its audit record could not be"
              f" written to {config.journal.path}", file=sys.stderr)


# What a store can fail with: config, file system, SQLite, PostgreSQL (asyncpg's errors
# derive from Exception only; they are named by type in the message).
def _store_errors() -> tuple[type[BaseException], ...]:
    import sqlite3

    errors: tuple[type[BaseException], ...] = (
        TokenError, AuditshipdError, OSError, ValueError, sqlite3.Error, RuntimeError,
    )
    try:
        import asyncpg
    except ImportError:
        return errors
    return (*errors, asyncpg.PostgresError, asyncpg.InterfaceError)


def _fail(message: str) -> int:
    print(f"auditshipd: {message}", file=sys.stderr)
    return 1


def _describe(exc: BaseException) -> str:
    from .pg_errors import describe

    if isinstance(exc, TokenError):
        return str(exc)
    return describe(exc)  # never a piece of the database URL


def token_create(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        token = _run_tokens(config, lambda t: t.create(args.name, args.role, args.organization))
    except _store_errors() as exc:
        return _fail(_describe(exc))
    _record_token(config, "created", args.name, args.role, args.organization)
    print(token)
    print(f"Token {args.name!r} ({args.role}, organization {args.organization}) created. "
          "It is shown only now: store it safely.", file=sys.stderr)
    return 0


def token_list(args: argparse.Namespace) -> int:
    try:
        records = _run_tokens(load_config(args.config), lambda t: t.list())
    except _store_errors() as exc:
        return _fail(_describe(exc))
    print(f"{'ID':<12}  {'NAME':<24}  {'ROLE':<6}  {'ORGANIZATION':<14}  {'CREATED':<20}  STATUS")
    for r in records:
        status = f"revoked {r.revoked_at}" if r.revoked_at else "active"
        print(f"{r.id:<12}  {r.name:<24}  {r.role:<6}  {r.organization:<14}  {r.created_at:<20}  {status}")
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        revoked = _run_tokens(config, lambda t: t.revoke(args.name_or_id))
    except _store_errors() as exc:
        return _fail(_describe(exc))
    if not revoked:
        return _fail(f"no active token named or with id {args.name_or_id!r}")
    for r in revoked:
        _record_token(config, "revoked", r.name, r.role, r.organization)
        print(f"revoked {r.name} ({r.id})")
    return 0


def run_portal(args: argparse.Namespace) -> int:
    if getattr(args, "action", "serve") in ("migrate", "reindex"):
        from .migrate_cli import portal_migrate, portal_reindex

        return (portal_migrate if args.action == "migrate" else portal_reindex)(args)
    try:
        config = load_config(getattr(args, "config", None))
        pc = portal_config(config)
        host, port = parse_listen(args.listen) if args.listen else (pc.host, pc.port)
    except (AuditshipdError, ValueError) as exc:
        return _fail(str(exc))
    return asyncio.run(_serve(config, host, port))


async def _serve(config: Any, host: str, port: int) -> int:
    from .server import start_portal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        server = await start_portal(config, host=host, port=port)
    except _store_errors() as exc:
        return _fail(f"cannot start the portal: {_describe(exc)}")
    print(f"audit log portal at {server.url}", file=sys.stderr)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0
