"""The one RFC 3339 parser and formatter (auditshipd.timestamps)."""

from __future__ import annotations

import datetime as dt

import pytest

from auditshipd.timestamps import (
    format_rfc3339,
    now_rfc3339,
    parse_rfc3339,
    parse_rfc3339_ns,
    parse_time,
)

UTC = dt.timezone.utc


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-01T05:55:00Z", dt.datetime(2026, 12, 1, 5, 55, tzinfo=UTC)),
    ("2026-12-01t05:55:00z", dt.datetime(2026, 12, 1, 5, 55, tzinfo=UTC)),
    # nanoseconds (other tools write them; fromisoformat on Python 3.10 refuses them)
    ("2026-12-01T05:55:00.123456789Z", dt.datetime(2026, 12, 1, 5, 55, 0, 123456, tzinfo=UTC)),
    ("2026-12-01T07:55:00.5+02:00", dt.datetime(2026, 12, 1, 5, 55, 0, 500000, tzinfo=UTC)),
    ("2026-12-01 05:55:00-0130", dt.datetime(2026, 12, 1, 7, 25, tzinfo=UTC)),
    ("2026-12-01T05:55:00", dt.datetime(2026, 12, 1, 5, 55, tzinfo=UTC)),  # no offset: UTC
    ("2026-12-01", dt.datetime(2026, 12, 1, tzinfo=UTC)),  # a date: midnight UTC
    ("0001-01-01T00:00:00Z", dt.datetime(1, 1, 1, tzinfo=UTC)),
    ("9999-12-31T23:59:59.999999Z", dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
])
def test_parses_rfc3339_in_every_spelling_to_utc(text, expected):
    """Z or z, any number of fraction digits, offsets with or without a colon, a space for
    T, no offset or a date alone (UTC): the same instant, as an aware UTC datetime."""
    assert parse_rfc3339(text) == expected
    assert parse_time(text) == expected.timestamp()


@pytest.mark.parametrize("text", [
    "", "now", "2026-13-01T00:00:00Z", "2026-12-01T25:00:00Z", "2026-12-01T05:55:00+",
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:00:00-02:00",  # after year 9999 in UTC
    "2026-12-01T05:55:00Z trailing", None, 1733032500,
    "2026-12-01T1\u0663:00:00Z", "\uff12\uff10\uff12\uff16-12-01",  # digits not in ASCII
])
def test_rejects_what_is_not_a_time_of_years_1_to_9999(text):
    """Junk, impossible dates and instants outside 0001-9999 in UTC: None, never an error."""
    assert parse_rfc3339(text) is None and parse_time(text) is None


def test_formats_sort_as_the_times_do():
    """Z, zero-padded years before 1000, 0, 3 or 6 fraction digits; now is parseable."""
    when = dt.datetime(999, 6, 15, 10, 0, 0, 123456, tzinfo=UTC)
    assert format_rfc3339(when) == "0999-06-15T10:00:00.123Z"
    assert format_rfc3339(when, digits=6) == "0999-06-15T10:00:00.123456Z"
    assert format_rfc3339(when, digits=0) == "0999-06-15T10:00:00Z"
    later = dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_rfc3339(later) == "2025-12-31T22:00:00.000Z"
    assert format_rfc3339(when) < format_rfc3339(later)
    assert abs(parse_time(now_rfc3339()) - dt.datetime.now(UTC).timestamp()) < 5


def test_nanoseconds_keep_nine_digits_and_agree_with_the_parser():
    """parse_rfc3339_ns reads what parse_rfc3339 reads, with the fraction's nine digits."""
    assert parse_rfc3339_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_rfc3339_ns("2024-05-17T15:59:58.123456789+02:00") == 1715954398123456789
    assert parse_rfc3339_ns("2024-05-17T13:59:58.1234567891Z") == 1715954398123456789
    assert parse_rfc3339_ns("1969-12-31T23:59:59.25Z") == -750_000_000
    assert parse_rfc3339_ns("0001-01-01T00:00:00Z") == -62135596800 * 1_000_000_000
    for text in ("2024-05-17T13:59:58.123456Z", "2024-05-17", "9999-12-31T23:59:59.999999Z"):
        when = parse_rfc3339(text)
        assert when is not None
        micros = (when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
        assert parse_rfc3339_ns(text) == micros * 1000
    for junk in ("yesterday", "", None, 12, "2024-13-01T00:00:00Z", "0001-01-01T00:00:00+01:00"):
        assert parse_rfc3339_ns(junk) is None


# 2016-12-31T23:59:59.999999Z: the second before the leap second, at its last microsecond.
BEFORE_LEAP = dt.datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "2016-12-31T23:59:60Z", "2016-12-31t23:59:60z", "2016-12-31T23:59:60",
    "2016-12-31T23:59:60.000Z", "2016-12-31T23:59:60.5Z", "2016-12-31T23:59:60.999999999Z",
    "2017-01-01T08:59:60+09:00", "2016-12-31T15:59:60-08:00", "2016-12-31 18:29:60-0530",
])
def test_a_leap_second_is_the_last_instant_of_the_second_before_it(text):
    """23:59:60 at the end of a UTC month (in any offset, with any fraction) is read, as
    23:59:59.999999 (nanoseconds .999999999): datetime has no second 60, and the second
    before keeps the event on its day and before every event that happened after it."""
    assert parse_rfc3339(text) == BEFORE_LEAP
    assert parse_time(text) == BEFORE_LEAP.timestamp()
    assert parse_rfc3339_ns(text) == 1483228799_999999999
    assert parse_rfc3339(text) < parse_rfc3339("2017-01-01T00:00:00Z")
    assert parse_rfc3339("2016-12-31T23:59:59.999Z") < parse_rfc3339(text)


def test_a_leap_second_at_the_end_of_june_or_of_any_month_is_read():
    assert parse_rfc3339("2015-06-30T23:59:60Z") == dt.datetime(2015, 6, 30, 23, 59, 59, 999999,
                                                               tzinfo=UTC)
    assert parse_rfc3339("2024-02-29T23:59:60Z") == dt.datetime(2024, 2, 29, 23, 59, 59, 999999,
                                                               tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "2016-12-31T12:00:60Z",  # not the last minute of the day
    "2016-12-30T23:59:60Z",  # not the last day of the month
    "2023-02-28T23:59:60+01:00",  # 22:59:60 in UTC
    "2016-12-31T23:59:61Z", "2016-12-31T23:60:00Z", "2016-12-31T24:00:00Z",
])
def test_a_second_60_anywhere_else_is_not_a_time(text):
    """Leap seconds happen at the end of a UTC month only (RFC 3339 section 5.7)."""
    assert parse_rfc3339(text) is None and parse_rfc3339_ns(text) is None
