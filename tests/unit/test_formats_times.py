"""Times the encoders cannot read: digits of other scripts, superscripts, prose, null, a
missing ``occurred_at``. Every tier (C, typed view, reference) writes the same bytes for
them, raises nothing, and writes the same bytes again when the event is encoded again
later (a redelivery under the same integrity seq must be byte for byte the first)."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import msgspec
import pytest

from auditshipd.formats import _formats_c  # the suite builds it (scripts/test.sh)
from auditshipd.formats.cef import CefEncoder
from auditshipd.formats.ecs import EcsEncoder
from auditshipd.formats.event import epoch_ms
from auditshipd.formats.ocsf import OcsfEncoder
from auditshipd.formats.registry import build_encoder
from auditshipd.formats.view import epoch_ms_fast

REFERENCE = {"ocsf": OcsfEncoder, "ecs": EcsEncoder, "cef": CefEncoder}
FORMATS = ("ocsf", "ecs", "cef")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# Non-ASCII "digits": a superscript (isdigit but not int), Arabic-Indic and fullwidth
# digits (int reads them), in the seconds, the milliseconds, the hour and the date.
NON_ASCII = ["2024-05-01T12:00:0\u00b2Z", "2024-05-01T12:00:00.00\u00b2Z",
             "2024-05-01T1\u0663:00:00Z", "2024-05-01T12:00:00.\u0661\u0662\u0663Z",
             "2024-0\uff15-01T12:00:00Z", "\u0662\u0660\u0662\u0664-05-01T12:00:00Z",
             "2024-05-01T12:00:00\u00b2", "2024-05-01"[:-1] + "\u0661"]


def tiers(fmt: str) -> list[Any]:
    """The encoder with its C tier, the same without it (typed view), and the reference."""
    with_c = build_encoder(fmt)
    with mock.patch.dict(os.environ, {"AUDITSHIPD_FORMATS_C": "0"}):
        without = build_encoder(fmt)
    assert with_c._c is _formats_c and without._c is None
    ref = build_encoder(fmt)
    return [with_c.encode_lines, without.encode_lines,
            lambda lines: [REFERENCE[fmt].encode(ref, _decode(x)) for x in lines]]


def line(**kw: Any) -> bytes:
    e: dict[str, Any] = {"id": "e1", "action": "user.created",
                         "occurred_at": "2024-05-01T12:00:00Z",
                         "actor": {"type": "user", "email": "a@b.test"}}
    e.update(kw)
    return _encode({k: v for k, v in e.items() if v is not ...})


@pytest.mark.parametrize("text", NON_ASCII)
def test_non_ascii_digits_are_an_unreadable_time(text):
    """epoch_ms and its cached form read ASCII digits only: the rest is unreadable."""
    assert epoch_ms(text) is None
    assert epoch_ms_fast(text) is None
    assert epoch_ms_fast(text) is None  # and not read from the per-second cache either


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unreadable_time_encodes_in_every_tier(fmt):
    """A batch holding such times encodes (nothing raises, so a sink never stalls on the
    line), each tier writes the same bytes, and the good events around them keep their
    times."""
    good = line(id="g", occurred_at="2024-05-01T12:00:01.500Z")
    lines = [good] + [line(occurred_at=t) for t in NON_ASCII] + [good]
    outs = [encode(lines) for encode in tiers(fmt)]
    assert outs[0] == outs[1] == outs[2]
    got = outs[0]
    assert got[0] == got[-1]
    if fmt == "cef":
        assert b"rt=1714564801500 " in got[0]
        assert all(b" rt=" not in x and b"|rt=" not in x for x in got[1:-1])
    else:
        assert b"1714564801500" in got[0] or b"2024-05-01T12:00:01.500Z" in got[0]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("at", ["last tuesday", None, ..., 1714564800, "2024-05-01T12:00:0\u00b2Z"])
def test_an_unreadable_time_is_written_the_same_at_every_encoding(fmt, at):
    """Encoded twice, a second apart on the clock, the same event gives the same bytes in
    every tier (OCSF writes ``time`` 0, not the encoding time)."""
    lines = [line(occurred_at=at)]
    with mock.patch("time.time_ns", return_value=1_800_000_000_000_000_000), \
            mock.patch("time.time", return_value=1_800_000_000.0):
        first = [encode(lines) for encode in tiers(fmt)]
    second = [encode(lines) for encode in tiers(fmt)]
    assert first == second
    assert first[0] == first[1] == first[2]
    if fmt == "ocsf":
        doc = msgspec.json.decode(first[0][0])
        assert doc["time"] == 0
        assert doc["unmapped"]["occurred_at"] == (None if at is ... else at)


@pytest.mark.parametrize("at", ["last tuesday", None, ..., 1714564800, "",
                                "2024-05-01T12:00:0\u00b2Z", "2024-02-30T00:00:00Z"])
def test_ecs_writes_the_epoch_for_a_time_it_cannot_read(at):
    """ECS ``@timestamp`` (a required date) is the epoch when ``occurred_at`` cannot be
    read, and ``auditshipd.occurred_at`` keeps what the event held (null when absent)."""
    lines = [line(occurred_at=at)]
    outs = [encode(lines) for encode in tiers("ecs")]
    assert outs[0] == outs[1] == outs[2]
    doc = msgspec.json.decode(outs[0][0])
    assert doc["@timestamp"] == "1970-01-01T00:00:00.000Z"
    assert doc["auditshipd"]["occurred_at"] == (None if at is ... else at)
    assert list(doc["auditshipd"]) == ["occurred_at", "actor_type"]


@pytest.mark.parametrize("at", ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.250Z",
                                "2024-05-01T14:00:00.25+02:00", "2024-05-01"])
def test_ecs_keeps_a_readable_time_as_the_event_wrote_it(at):
    lines = [line(occurred_at=at)]
    outs = [encode(lines) for encode in tiers("ecs")]
    assert outs[0] == outs[1] == outs[2]
    doc = msgspec.json.decode(outs[0][0])
    assert doc["@timestamp"] == at and "occurred_at" not in doc["auditshipd"]


# Readable RFC 3339 that Elasticsearch's strict_date_optional_time refuses or reads
# otherwise, and the @timestamp each becomes.
LOOSE = [("2024-05-01 12:00:01.5Z", "2024-05-01T12:00:01.500Z"),
         ("2024-05-01t12:00:01z", "2024-05-01T12:00:01.000Z"),
         ("2024-05-01T12:00:01", "2024-05-01T12:00:01.000Z"),
         ("2024-05-01T14:00:01+0200", "2024-05-01T12:00:01.000Z"),
         ("2024-05-01T12:00Z", "2024-05-01T12:00:00.000Z"),
         (" 2024-05-01T12:00:01Z", "2024-05-01T12:00:01.000Z"),
         ("2024-05-01T12:00:01,25Z", "2024-05-01T12:00:01.250Z")]
STRICT = ["2024-05-01T12:00:01Z", "2024-05-01T12:00:01.123456789Z",
          "2024-05-01T14:00:01.5+02:00", "2024-05-01T12:00:01.000Z"]


@pytest.mark.parametrize(("text", "stamp"), LOOSE)
def test_ecs_timestamp_is_strict_rfc3339_in_every_tier(text, stamp):
    """A readable time in a loose form becomes its instant in UTC in ``@timestamp`` (a
    date field Elasticsearch parses with strict_date_optional_time), the original kept
    in ``auditshipd.occurred_at``; every tier writes the same bytes."""
    lines = [line(occurred_at=text)]
    outs = [encode(lines) for encode in tiers("ecs")]
    assert outs[0] == outs[1] == outs[2]
    doc = _decode(outs[0][0])
    assert doc["@timestamp"] == stamp
    assert doc["auditshipd"]["occurred_at"] == text


@pytest.mark.parametrize("text", STRICT)
def test_ecs_keeps_a_strict_time_as_written(text):
    lines = [line(occurred_at=text)]
    outs = [encode(lines) for encode in tiers("ecs")]
    assert outs[0] == outs[1] == outs[2]
    doc = _decode(outs[0][0])
    assert doc["@timestamp"] == text
    assert "occurred_at" not in doc.get("auditshipd", {})


# A leap second in the forms an event may write it, each 2016-12-31T23:59:60 UTC.
LEAP = ["2016-12-31T23:59:60Z", "2016-12-31T23:59:60.500Z", "2016-12-31T23:59:60.123456789Z",
        "2017-01-01T08:59:60+09:00", "2016-12-31 23:59:60z"]
LEAP_MS = 1483228799999  # 2016-12-31T23:59:59.999Z


@pytest.mark.parametrize("text", LEAP)
def test_a_leap_second_is_the_last_millisecond_before_it(text):
    """epoch_ms and its per-second cache read a leap second as 23:59:59.999, and the
    cache does not keep it for the next event of that minute."""
    assert epoch_ms(text) == LEAP_MS
    assert epoch_ms_fast(text) == LEAP_MS
    assert epoch_ms_fast("2016-12-31T23:59:59.250Z") == LEAP_MS - 749


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("text", LEAP)
def test_a_leap_second_gives_the_same_instant_in_every_format_and_tier(fmt, text):
    """OCSF ``time`` and CEF ``rt`` are 1483228799999 (not 0, not left out); ECS
    ``@timestamp`` is that instant, ``2016-12-31T23:59:59.999Z`` (Elasticsearch refuses a
    second 60), the original kept in ``auditshipd.occurred_at``; C hands the line to
    Python, and every tier writes the same bytes."""
    lines = [line(occurred_at=text)]
    _formats_c.handed_back()
    outs = [encode(lines) for encode in tiers(fmt)]
    assert _formats_c.handed_back() == 1
    assert outs[0] == outs[1] == outs[2]
    got = outs[0][0]
    if fmt == "cef":
        assert f"|rt={LEAP_MS} ".encode() in got
        return
    doc = _decode(got)
    if fmt == "ocsf":
        assert doc["time"] == LEAP_MS and "unmapped" not in doc
    else:
        assert doc["@timestamp"] == "2016-12-31T23:59:59.999Z"
        assert doc["auditshipd"]["occurred_at"] == text


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_second_60_that_is_no_leap_second_stays_unreadable(fmt):
    """12:00:60 is no leap second: OCSF time 0, ECS the epoch, no CEF rt, as before."""
    lines = [line(occurred_at="2016-12-31T12:00:60Z")]
    outs = [encode(lines) for encode in tiers(fmt)]
    assert outs[0] == outs[1] == outs[2]
    got = outs[0][0]
    if fmt == "cef":
        assert b"rt=" not in got
    elif fmt == "ocsf":
        assert _decode(got)["time"] == 0
    else:
        assert _decode(got)["@timestamp"] == "1970-01-01T00:00:00.000Z"
