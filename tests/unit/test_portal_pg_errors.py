"""What a PostgreSQL portal database's URL and failures may say, and which failures are
retried: no piece of a password written with an unencoded reserved character reaches a
message, and server conditions a retry can outlive never dead-letter a batch."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from auditshipd.errors import PermanentError, RetryableError
from auditshipd.portal.backend import store_failure
from auditshipd.portal.config import check_database
from auditshipd.portal.pg_errors import (
    BAD_URL,
    UNNAMED,
    DatabaseURLError,
    connect_argument_error,
    describe,
    retry_kind,
    safe_location,
    url_problem,
)
from auditshipd.portal.pg_store import PostgresEventStore

SECRET = "Pw9xLongSecretPart"
# Passwords as users write them: a reserved character left unencoded.
LEAKY_URLS = [
    f"postgresql://app:{SECRET}/k2@127.0.0.1:5432/db",  # '/': the rest reads as the path
    f"postgresql://app:2024/{SECRET}@127.0.0.1:5432/db",  # '/' after digits: a valid port
    f"postgresql://app:{SECRET}#k2@127.0.0.1:5432/db",  # '#': the rest is a fragment
    f"postgresql://app:x?{SECRET}@127.0.0.1:5432/db",  # '?': the rest reads as the query
    f"postgresql://app:12?{SECRET}@127.0.0.1:5432/db",
    f"postgresql://app:ab@{SECRET}@127.0.0.1:5432/db",  # '@': asyncpg splits at the first
    f"postgresql://app:ab@cd:{SECRET}@127.0.0.1:5432/db",
    f"postgresql://127.0.0.1:5432/db?user=app&password=a&{SECRET}",  # '&' in ?password=
    f"postgresql://127.0.0.1:5432/db?user=app&password=a&&{SECRET}=",
    f"postgresql://app:{SECRET}@[::1:5432/db",
    f"PostgreSQL://app:{SECRET}/k2@127.0.0.1:5432/db",
]
GOOD_URLS = {
    "postgresql://postgres@127.0.0.1:5432/db": "postgresql://127.0.0.1:5432/db",
    f"postgresql://app:{SECRET}@db.internal/auditlog": "postgresql://db.internal/auditlog",
    # Reserved characters percent-encoded, a '%' that starts no escape left as it is.
    f"postgresql://app:a%2F{SECRET}%23%3F%40@h:6432/x": "postgresql://h:6432/x",
    f"postgresql://app:50%{SECRET}@h/x": "postgresql://h/x",
    f"postgresql://h/x?user=app&password={SECRET}&sslmode=require": "postgresql://h/x",
    "postgresql://postgres@[::1]:5432/x?search_path=t_1": "postgresql://[::1]:5432/x",
    "postgresql:///x?host=/var/run/postgresql": "postgresql://localhost/x",
}


@pytest.mark.parametrize("url", LEAKY_URLS)
def test_a_url_readers_split_differently_is_refused_without_quoting_it(url: str) -> None:
    database, problem = check_database(url)
    assert problem == BAD_URL == url_problem(database)
    assert problem is not None and SECRET not in problem
    assert safe_location(url) == UNNAMED


@pytest.mark.parametrize(("url", "where"), GOOD_URLS.items())
def test_a_clean_url_is_accepted_and_named_by_host_port_and_database(url: str, where: str) -> None:
    assert check_database(url) == (url, None)
    assert safe_location(url) == where
    assert SECRET not in where


@pytest.mark.parametrize("url", LEAKY_URLS)
async def test_the_store_refuses_such_a_url_before_asyncpg_reads_it(url: str) -> None:
    """Constructed directly (not through the config): the store still never hands the URL
    to asyncpg, whose errors quote the piece they could not read."""
    store = PostgresEventStore(url)
    assert SECRET not in store.where
    with pytest.raises(DatabaseURLError) as caught:
        await store.open()
    assert SECRET not in str(caught.value)
    failure = store_failure(caught.value, url)
    assert isinstance(failure, PermanentError) and SECRET not in str(failure)


@pytest.mark.parametrize("url", [
    f"postgresql://127.0.0.1:5432/db?user=app&password=a&{SECRET}",
    f"postgresql://app:ab@cd:{SECRET}@127.0.0.1:5432/db",
    f"postgresql://127.0.0.1:5432/db?password={SECRET}&sslmode=bogus",
])
async def test_asyncpgs_complaints_about_its_arguments_become_a_fixed_sentence(url: str) -> None:
    """asyncpg's own DSN errors (raised before any connection) quote the URL: whatever
    reaches asyncpg, describe() and store_failure() say a fixed sentence instead."""
    for attempt in (lambda: asyncpg.connect(url), lambda: asyncpg.create_pool(url)):
        with pytest.raises((ValueError, asyncpg.InterfaceError)) as caught:
            await asyncio.wait_for(attempt(), 10)
        exc = caught.value
        assert connect_argument_error(exc)
        assert SECRET not in describe(exc) and "cannot be used" in describe(exc)
        failure = store_failure(exc)
        assert isinstance(failure, PermanentError) and SECRET not in str(failure)


def test_other_value_errors_are_not_taken_for_url_errors() -> None:
    try:
        int("not a number")
    except ValueError as exc:
        assert not connect_argument_error(exc)
        assert describe(exc) == "ValueError: invalid literal for int() with base 10: 'not a number'"


def test_the_sinks_messages_mask_the_urls_secrets() -> None:
    """Whatever a failure's text holds, the user, password and query values of the
    sink's database URL are masked in it."""
    url = f"postgresql://app:{SECRET}@h/x?sslkey=/k/{SECRET}2"
    failure = store_failure(OSError(f"cannot read /k/{SECRET}2 for {SECRET}"), url)
    assert isinstance(failure, RetryableError)
    assert SECRET not in str(failure) and "portal database unreachable" in str(failure)


RETRIED = {
    "08000": "unavailable", "08003": "unavailable", "08006": "unavailable",  # connection
    "08P01": "unavailable",
    "28000": "unavailable", "28P01": "unavailable",  # login not permitted, wrong password
    "3D000": "unavailable",  # database does not exist yet
    "25006": "unavailable",  # read-only transaction: a standby during a failover
    "25P03": "unavailable", "25P04": "unavailable",  # session/transaction timeouts
    "42501": "unavailable",  # a privilege taken away
    "53000": "unavailable", "53100": "unavailable", "53200": "unavailable",  # resources
    "53300": "unavailable",  # too many connections
    "57000": "unavailable", "57014": "unavailable", "57P01": "unavailable",  # operator
    "57P02": "unavailable", "57P03": "unavailable", "57P05": "unavailable",
    "58000": "unavailable", "58030": "unavailable",  # system error, I/O error
    "40000": "busy", "40001": "busy", "40003": "busy", "40P01": "busy",  # contention
    "55P03": "busy",  # lock not available
}
REFUSED = [
    "22001", "22P02", "22021", "22008",  # data exceptions: the batch's values
    "23502", "23505", "23514",  # constraint violations
    "40002",  # integrity constraint violation at commit
    "42601", "42P01", "42703",  # the statement, the schema
    "54000", "55000", "XX000", "XX001", "P0001", "0A000", "", None, "57", "2800",
]


@pytest.mark.parametrize(("sqlstate", "kind"), RETRIED.items())
def test_server_conditions_a_retry_can_outlive_are_retried(sqlstate: str, kind: str) -> None:
    assert retry_kind(sqlstate) == kind
    exc = asyncpg.PostgresError.new({"C": sqlstate, "M": "the server's words", "S": "FATAL"})
    failure = store_failure(exc)
    assert isinstance(failure, RetryableError)
    assert str(failure) == f"portal database {kind}: {type(exc).__name__}: the server's words"


@pytest.mark.parametrize("sqlstate", REFUSED)
def test_errors_of_the_batch_stay_permanent(sqlstate: str | None) -> None:
    assert retry_kind(sqlstate) is None
    if sqlstate and len(sqlstate) == 5:
        exc = asyncpg.PostgresError.new({"C": sqlstate, "M": "bad value", "S": "ERROR"})
        failure = store_failure(exc)
        assert isinstance(failure, PermanentError)
        assert str(failure).startswith("portal database refused the batch: ")


def test_client_side_failures() -> None:
    """A connection closed under the store is retried; a value asyncpg cannot encode
    refuses the batch."""
    closed = store_failure(asyncpg.InterfaceError("connection is closed"))
    assert isinstance(closed, RetryableError) and "unavailable" in str(closed)
    bad = store_failure(asyncpg.exceptions.DataError("invalid input for query argument $1"))
    assert isinstance(bad, PermanentError)
