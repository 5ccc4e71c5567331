"""What a PostgreSQL portal database's URL and failures may say, and which failures a
retry can outlive.

A ``postgresql://`` URL holds a password. Written with a reserved character left
unencoded (``/ # ? @`` in the password, ``&`` in a ``?password=`` value), parsers split
it in different places: the standard library takes the part after a ``/`` for the
database name, asyncpg the part after the first ``@`` for the host, and their error
texts quote what they could not read. So:

- :func:`url_problem` accepts only a URL that every reader splits the same way, and
  says what is wrong in a fixed sentence;
- :func:`safe_location` shows ``postgresql://host:port/db`` of such a URL, and a fixed
  placeholder for any other;
- :func:`describe` is the one text any message gives of a database exception: the
  client library's complaints about the connection arguments become a fixed sentence
  (their texts quote the URL's parts);
- :func:`retry_kind` says, by SQLSTATE, which server errors are conditions of the server
  (connection, login, read-only standby, resources, shutdown, contention) rather than
  of the batch;
- :func:`one_line_pool_log` makes asyncpg's pool, which logs a traceback each time it
  fails to reconnect while the server is down, say it in one line of :func:`describe`.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

from ..errors import AuditshipdError, ConfigError

__all__ = [
    "BAD_URL",
    "UNNAMED",
    "DatabaseURLError",
    "connect_argument_error",
    "describe",
    "one_line_pool_log",
    "retry_kind",
    "safe_location",
    "url_problem",
]

URL_HINT = "percent-encode reserved characters such as / # ? @ in the user and password"
BAD_URL = f"not a valid PostgreSQL URL ({URL_HINT})"
# What a message names instead of a URL that does not split cleanly.
UNNAMED = "<the configured PostgreSQL URL>"
_UNUSABLE = ("the PostgreSQL URL cannot be used ({kind}): check its query parameters"
             f" (sslmode, port, ...) and {URL_HINT}")


class DatabaseURLError(ConfigError):
    """A PostgreSQL URL the store will not hand to the client library, or whose
    connection arguments the client refused; the message never quotes the URL."""


def url_problem(url: str) -> str | None:
    """:data:`BAD_URL` when ``url`` does not split into user, password, host, port,
    database and query the same way for every reader; None when it does. A password
    holding ``/``, ``?`` or ``#`` leaves an ``@`` after the host part (or a fragment), one
    holding ``@`` leaves two: both refused, as is a query that is not ``key=value``
    pairs (the rest of a ``?password=`` value holding ``&``) or a port that is no number."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is no number
        if parts.query:
            parse_qs(parts.query, strict_parsing=True)
    except ValueError:
        return BAD_URL
    ats = parts.netloc.count("@")
    if "#" in url or ats > 1 or url.count("@") != ats:
        return BAD_URL
    return None


def safe_location(url: str) -> str:
    """``postgresql://host:port/db`` of a URL, for messages: never its user, password or
    query. A URL :func:`url_problem` refuses has no part known to be free of the
    password: :data:`UNNAMED` then."""
    if url_problem(url) is not None:
        return UNNAMED
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{host}{port}{parts.path}"


def connect_argument_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the client library refusing the connection arguments (the URL,
    its query parameters) before any connection: its text may quote parts of the URL."""
    if isinstance(exc, DatabaseURLError):
        return True
    if type(exc).__name__ == "ClientConfigurationError":
        return True
    if not isinstance(exc, (ValueError, TypeError, LookupError)) or _server_side(exc):
        return False
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (frame.f_globals.get("__name__") == "asyncpg.connect_utils"
                and frame.f_code.co_name.startswith("_parse")):
            return True
        tb = tb.tb_next
    return False


def _server_side(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) is not None


def describe(exc: BaseException) -> str:
    """The text any message gives of ``exc``, a failure of a portal database: the
    exception's type and text, except for a refused URL or connection arguments (a
    fixed sentence) and auditshipd's own errors (their text)."""
    if isinstance(exc, DatabaseURLError):
        return str(exc)
    if connect_argument_error(exc):
        return _UNUSABLE.format(kind=type(exc).__name__)
    if isinstance(exc, AuditshipdError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class _OneLine(logging.Filter):
    """A record with an exception gets the exception's :func:`describe` text appended
    instead of a traceback (the operator's log holds no traceback for an outage)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            record.msg = f"{record.getMessage()}: {describe(exc)}"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


def one_line_pool_log() -> None:
    """asyncpg's pool restores its minimum of connections in the background and logs a
    traceback (a warning) at each failed try while the server is down or refuses the
    login: from now on, in one line."""
    log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, _OneLine) for f in log.filters):
        log.addFilter(_OneLine())


# SQLSTATE classes and codes of conditions of the server, not of the batch: the same
# batch goes through once they pass (a failover, a rotated password, an operator's
# intervention, a full disk freed), so the batch waits in the journal meanwhile.
_UNAVAILABLE_CLASSES = frozenset({
    "08",  # connection exception: dropped, refused, protocol trouble
    "28",  # invalid authorization: wrong password after a rotation, login not permitted
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "57",  # operator intervention: shutdown, cannot connect now, statement timeout
    "58",  # system error: I/O error on the server
})
_UNAVAILABLE_CODES = frozenset({
    "3D000",  # database does not exist (yet)
    "25006",  # read-only transaction: a standby, or the primary during a failover
    "25P03",  # idle-in-transaction session timeout ended the session
    "25P04",  # transaction timeout (statement_timeout's sibling)
    "42501",  # insufficient privilege: a grant taken away, the same for every batch
})
_BUSY_CLASSES = frozenset({"40"})  # transaction rollback: serialization, deadlock
_BUSY_CODES = frozenset({"55P03"})  # lock not available (lock_timeout)
# Class 40's integrity constraint violation is the data's fault, not contention.
_PERMANENT_CODES = frozenset({"40002"})


def retry_kind(sqlstate: str | None) -> str | None:
    """``"unavailable"`` or ``"busy"`` when a server error of SQLSTATE ``sqlstate`` is a
    condition a retry can outlive; None when it concerns the batch (data errors of class
    22, constraint violations of class 23, ...) and retrying cannot help."""
    if not sqlstate or len(sqlstate) != 5 or sqlstate in _PERMANENT_CODES:
        return None
    if sqlstate in _UNAVAILABLE_CODES or sqlstate[:2] in _UNAVAILABLE_CLASSES:
        return "unavailable"
    if sqlstate in _BUSY_CODES or sqlstate[:2] in _BUSY_CLASSES:
        return "busy"
    return None
