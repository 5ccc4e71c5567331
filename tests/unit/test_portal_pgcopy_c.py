"""The C writer of the PostgreSQL store's binary COPY input (portal/_pgcopy_c.c): its
framing, its errors on records it does not know, and no leak over many calls (what it
stores is compared with asyncpg's in tests/portal/test_portal_pg_copy.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from auditshipd.portal._pgcopy_c import rows
from hypothesis import given, settings
from hypothesis import strategies as st

from auditshipd.portal.pg_sql import PG_EPOCH
from auditshipd.portal.pg_store import _encode_time

UTC = dt.timezone.utc
_RECORD = ("e1", dt.datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC), "a", "b", None, [], b"\0\0\0\0", "{}")


def test_framing_of_a_record() -> None:
    """Signature, flags and extension, then per record the field count and each field
    (text as UTF-8, microseconds since 2000, NULL as -1, an empty array of text), then
    the trailer."""
    out = rows([_RECORD], PG_EPOCH)
    header = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    body = (b"\x00\x08" + b"\x00\x00\x00\x02e1" + b"\x00\x00\x00\x08" + (1_000_000).to_bytes(8, "big")
            + b"\x00\x00\x00\x01a" + b"\x00\x00\x00\x01b" + b"\xff\xff\xff\xff"
            + b"\x00\x00\x00\x0c" + b"\x00\x00\x00\x00" * 2 + b"\x00\x00\x00\x19"
            + b"\x00\x00\x00\x04" + b"\0\0\0\0" + b"\x00\x00\x00\x02{}")
    assert out == header + body + b"\xff\xff"
    arr = rows([(*_RECORD[:5], ["xy", "é"], *_RECORD[6:])], PG_EPOCH)
    assert (b"\x00\x00\x00\x20" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x19"
            + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02xy"
            + b"\x00\x00\x00\x02" + "é".encode()) in arr
    before = dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert (-1).to_bytes(8, "big", signed=True) in rows([(_RECORD[0], before, *_RECORD[2:])], PG_EPOCH)
    assert rows([], PG_EPOCH) == header + b"\xff\xff"


@settings(max_examples=500, deadline=None)
@given(when=st.datetimes(timezones=st.sampled_from(
    [UTC, dt.timezone(dt.timedelta(0)), dt.timezone(dt.timedelta(hours=5, minutes=30))])))
def test_times_are_the_microseconds_python_counts(when: dt.datetime) -> None:
    """Any instant from year 1 to 9999, in UTC (read from its fields) or another zone (by
    subtraction): the microseconds since 2000 that the store's Python codec sends."""
    try:
        expected = _encode_time(when)[0]
    except OverflowError:  # before year 1 in UTC: not a time either side can send
        return
    out = rows([(_RECORD[0], when, *_RECORD[2:])], PG_EPOCH)
    at = 19 + 2 + 4 + 2 + 4
    assert int.from_bytes(out[at:at + 8], "big", signed=True) == expected


@pytest.mark.parametrize("bad", [
    (1, *_RECORD[1:]),
    (_RECORD[0], "2026-01-01", *_RECORD[2:]),
    (*_RECORD[:4], 5, *_RECORD[5:]),
    (*_RECORD[:5], ("t",), *_RECORD[6:]),
    (*_RECORD[:5], ["t", None], *_RECORD[6:]),
    (*_RECORD[:6], "vector", _RECORD[7]),
    (*_RECORD[:7], b"{}"),
    _RECORD[:7],
    list(_RECORD),
    ("\ud800", *_RECORD[1:]),
])
def test_records_it_does_not_know_are_errors(bad: object) -> None:
    """Another type in any field, a lone surrogate, a record of another length: an error,
    no stream."""
    with pytest.raises((TypeError, UnicodeEncodeError)):
        rows([_RECORD, bad], PG_EPOCH)


def test_no_memory_or_reference_leak_over_many_calls() -> None:
    """A debug loop over rows() (good records, a bad one midway): after thousands of rounds
    no memory is left allocated and no reference on the records."""

    from c_leaks import assert_no_leak

    good = [(f"e{i}", dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i), "a", "b",
             None if i % 2 else "org", [f"t{i}"] * (i % 3), b"\0\0\0\0", "{}" * i) for i in range(30)]
    bad = [*good[:10], (*good[10][:5], [1], *good[10][6:]), *good[11:]]

    def run() -> None:
        rows(good, PG_EPOCH)
        with pytest.raises(TypeError):
            rows(bad, PG_EPOCH)

    assert_no_leak(run, good)
