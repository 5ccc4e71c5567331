"""RFC 3339 times: the one parser and the one formatter.

Events, state files (status, dead letters, quarantine), ``start_at``, the portal and the
sinks read times with :func:`parse_rfc3339` and write them with :func:`format_rfc3339`
or :func:`now_rfc3339`. The parser is a regular expression rather than
``datetime.fromisoformat``, which on Python 3.10 rejects ``Z`` and fractions of more than
six digits (nanoseconds, as other tools write them).

A leap second (``23:59:60`` at the end of a UTC month, RFC 3339 section 5.7, in any
offset) reads as the last instant of the second before it (``23:59:59.999999``;
nanoseconds ``.999999999``), whatever its fraction: ``datetime`` has no second 60, and
POSIX time, which every sink and SIEM counts in, has none either. The next second
(``00:00:00``, what ``timegm`` gives) would put the event on the next day (daily
indices, object key partitions) and after events that happened after it
(``23:59:60.5`` at ``00:00:00.500``, behind an event of ``00:00:00.200``); the second
before keeps it on the day that wrote it and never after a later event.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
from typing import Any

__all__ = ["epoch_rfc3339", "format_rfc3339", "now_rfc3339", "parse_rfc3339", "parse_rfc3339_ns", "parse_time"]

_UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"  # a date alone is midnight UTC
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?",  # no offset: UTC
    re.ASCII,  # digits are 0-9 only: int() would read other scripts' digits too
)


def _parse(value: Any) -> tuple[_dt.datetime, str] | None:
    # The instant (microseconds) and the fraction's digits as written (a leap second's:
    # nine 9s, the last nanosecond of the second before it).
    if not isinstance(value, str):
        return None
    m = _RFC3339.fullmatch(value.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, _z, sign, off_h, off_m = m.groups()
    leap = second == "60"
    try:
        micro = int((frac or "0")[:6].ljust(6, "0"))
        when = _dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                            59 if leap else int(second or 0), micro, tzinfo=_UTC)
        if sign:
            offset = _dt.timedelta(hours=int(off_h), minutes=int(off_m))
            when = when - offset if sign == "+" else when + offset
    except (ValueError, OverflowError):
        return None
    if leap:  # the last instant of 23:59:59 (see above), only at the end of a UTC month
        if (when.hour, when.minute) != (23, 59) or \
                when.day != calendar.monthrange(when.year, when.month)[1]:
            return None
        return when.replace(microsecond=999_999), "999999999"
    return when, frac or ""


def parse_rfc3339(value: Any) -> _dt.datetime | None:
    """The instant of an RFC 3339 time (also a date alone, or a time without offset,
    both taken as UTC), as an aware UTC datetime; fractions beyond microseconds are cut;
    a leap second is ``23:59:59.999999``. None for anything else, and for an instant
    outside the years 0001-9999 in UTC."""
    parsed = _parse(value)
    return None if parsed is None else parsed[0]


def parse_rfc3339_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time read as :func:`parse_rfc3339` reads
    it, keeping nine fraction digits (further ones are cut); None where it gives None."""
    parsed = _parse(value)
    if parsed is None:
        return None
    when, frac = parsed
    seconds = (when.replace(microsecond=0) - _EPOCH) // _dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int(frac[:9].ljust(9, "0"))


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (see :func:`parse_rfc3339`), else None."""
    when = parse_rfc3339(value)
    return None if when is None else when.timestamp()


def format_rfc3339(value: _dt.datetime, digits: int = 3) -> str:
    """``YYYY-MM-DDTHH:MM:SS[.fff]Z`` in UTC with ``digits`` (0, 3 or 6) fraction digits;
    four-digit years also before 1000, so the text sorts as the time does. A naive
    datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    u = value.astimezone(_UTC)
    text = f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
    if digits == 3:
        text += f".{u.microsecond // 1000:03d}"
    elif digits == 6:
        text += f".{u.microsecond:06d}"
    elif digits != 0:
        raise ValueError("digits must be 0, 3 or 6")
    return text + "Z"


def now_rfc3339(digits: int = 3) -> str:
    """The current time, as :func:`format_rfc3339` writes it."""
    return format_rfc3339(_dt.datetime.now(_UTC), digits)


def epoch_rfc3339(seconds: float, digits: int = 3) -> str:
    """A Unix time (``time.time()``), as :func:`format_rfc3339` writes it."""
    return format_rfc3339(_dt.datetime.fromtimestamp(seconds, _UTC), digits)
