"""The C tier of the format encoders (formats/_formats_c.c) against the reference encoders
(ocsf.py, ecs.py, cef.py) and against the Python tier it hands lines back to: the same
bytes on the corpus and on generated events (odd unicode, huge numbers, deep metadata,
CEF's special characters, TOML action tables), every corpus line answered in C, and
every line C refuses (whitespace, escapes msgspec would not write, invalid UTF-8 or
JSON, duplicate keys, other time forms) answered by the Python tier as before."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from c_leaks import traced_growth
from hypothesis import given, settings
from hypothesis import strategies as st

from auditshipd.config import parse_config
from auditshipd.formats import _formats_c  # the suite builds it (scripts/test.sh)
from auditshipd.formats.cef import CefEncoder
from auditshipd.formats.ecs import EcsEncoder
from auditshipd.formats.ocsf import OcsfEncoder
from auditshipd.formats.ocsf_actions import ACTIONS
from auditshipd.formats.registry import build_encoder
from auditshipd.redaction.redactor import compile_policy

CORPUS = Path(__file__).parent / "redact_corpus" / "workos_lifecycle.jsonl"
REFERENCE = {"ocsf": OcsfEncoder, "ecs": EcsEncoder, "cef": CefEncoder}
FORMATS = ("ocsf", "ecs", "cef")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
TABLE = parse_config('''
[formats.ocsf]
product_name = "Acme | \\"App\\" = \\\\"
[formats.ocsf.actions]
"invoice.voided" = { class_uid = 6003, activity_id = 4 }
"report.viewed" = { class_uid = 6001, activity_id = 2, severity_id = 3 }
"user.invited" = { class_uid = 3001, activity_id = 1, severity_id = 2 }
"team.synced" = { class_uid = 3006, activity_id = 99, activity_name = "Sync" }
"role.granted" = { class_uid = 3005, activity_id = 1 }
"sso.login" = { class_uid = 3002, activity_id = 1 }
''').formats


def encoders(fmt: str, formats: Any = None) -> tuple[Any, Any]:
    """(the encoder sinks get, with the C tier; the same without it)."""
    with_c = build_encoder(fmt, formats)
    with mock.patch.dict(os.environ, {"AUDITSHIPD_FORMATS_C": "0"}):
        without = build_encoder(fmt, formats)
    assert with_c._c is _formats_c and without._c is None
    return with_c, without


def reference(fmt: str, lines: list[bytes], formats: Any = None) -> list[bytes]:
    ref = build_encoder(fmt, formats)
    return [REFERENCE[fmt].encode(ref, _decode(x)) for x in lines]


def outcome(encode: Any, lines: list[bytes]) -> Any:
    """What ``encode(lines)`` returns, or the type of what it raises."""
    try:
        return encode(lines)
    except Exception as exc:  # the comparison is the point: both tiers must agree
        return type(exc)


def corpus_lines() -> list[bytes]:
    r = compile_policy(None)
    lines = [_encode(r(json.loads(x))) for x in CORPUS.read_bytes().splitlines()]
    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    try:
        from gen_events import EventFactory  # the benchmark's events, redacted
    finally:
        sys.path.pop(0)
    gen = EventFactory(11)
    return lines + [r.redact_line(_encode(gen.event(i))) for i in range(3000)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_corpus_is_written_in_c_byte_for_byte(fmt):
    """The corpus and the benchmark's events, redacted by the default policy: C answers
    every line itself and writes the reference's bytes, built-in table and TOML table."""
    lines = corpus_lines()
    for table in (None, TABLE):
        with_c, without = encoders(fmt, table)
        _formats_c.handed_back()
        got = with_c.encode_lines(lines)
        assert _formats_c.handed_back() == 0
        assert got == reference(fmt, lines, table)
        assert without.encode_lines(lines) == got


_odd_text = st.one_of(
    st.text(max_size=16),
    st.sampled_from(["", "user", "admin", "group", "member", "invitation",
                     "organization_membership", "ada@acme.test", "a|b=c\\d\ne\rf",
                     "\u2028\u2029\x7f\x00\x1f\"", "é😀\U0010ffff", "203.0.113.7", "0.0.0.0",
                     "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5",
                     "1.2.3.4 ", "2001:DB8::1", "::ffff:1.2.3.4", "fe80::1%eth0",
                     "fe80::1%a=b", "::", "1:2", "Berlin, DE",
                     # around CEF's maximum lengths (40, 63, 1023, 4000 characters)
                     "i" * 41, "\u00e9" * 30, "x=" * 520, "\u00e9" * 600, "\u00e9" * 1030,
                     "\\" * 1024, "u" * 4001]))
_number = st.one_of(st.integers(-10**40, 10**40), st.integers(-3, 3),
                    st.floats(allow_nan=False, allow_infinity=False))
_json = st.recursive(
    st.none() | st.booleans() | _number | _odd_text,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(_odd_text, c, max_size=3),
    max_leaves=12)
_deep = st.integers(1, 40).map(lambda d: {"k": json.loads("[" * d + "1" + "]" * d)})
_party = st.one_of(
    st.fixed_dictionaries({}, optional={"type": st.one_of(_odd_text, st.none()),
                                        "email": st.one_of(_odd_text, st.none()),
                                        "name": st.one_of(_odd_text, st.none()),
                                        "id_hash": _odd_text, "extra": _json}),
    st.none())
_time = st.one_of(
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") +
                       f"{d.microsecond // 1000:03d}Z"),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.sampled_from(["2024-02-29T23:59:59.999Z", "2023-02-29T00:00:00Z",
                     "2024-13-01T00:00:00Z", "2024-05-01T24:00:00Z", "2024-05-01T09:00:60Z",
                     "0000-01-01T00:00:00Z", "2024-05-01T09:00:00.25+02:00",
                     "2024-05-01T09:00:00.123456Z", "2024-05-01 09:00:00Z", "2024-01- 1T00:00:00Z",
                     "2024-05-01T09:00:0\u00b2Z", "2024-05-01T09:00:00.00\u00b2Z",
                     "2024-05-01T0\u0663:00:00Z", "2024-05-01T09:00:00.\u0661\u0662\u0663Z",
                     "yesterday", ""]))
_actions = sorted(ACTIONS) + ["invoice.voided", "report.viewed", "team.synced", "role.granted",
                              "sso.login", "thing.frobnicated", "sso.login.denied", "x", "",
                              "a|b=c\\d", "é.created"]
_event = st.fixed_dictionaries({}, optional={
    "id": st.one_of(_odd_text, st.integers()),
    "action": st.one_of(st.sampled_from(_actions), _odd_text, st.none(), st.integers()),
    "occurred_at": st.one_of(_time, st.none(), st.integers()),
    "version": st.just(1),
    "actor": st.one_of(_party, _odd_text),
    "targets": st.one_of(st.lists(_party, max_size=4), st.none(), _party),
    "organization": st.one_of(
        st.fixed_dictionaries({}, optional={"slug": st.one_of(_odd_text, st.none()),
                                            "name": st.one_of(_odd_text, st.none())}),
        st.none(), st.integers()),
    "context": st.one_of(
        st.fixed_dictionaries({}, optional={"location": st.one_of(_odd_text, st.none()),
                                            "user_agent": st.one_of(_odd_text, st.none())}),
        st.none(), _odd_text),
    "metadata": st.one_of(
        _json, _deep,
        st.fixed_dictionaries({}, optional={"role": _json, "new_role": _odd_text,
                                            "to": _odd_text, "n": _number})),
    "zz": _json,
})


@settings(max_examples=500, deadline=None)
@given(events=st.lists(_event, min_size=1, max_size=6), table=st.booleans())
def test_generated_events_match_the_reference(events, table):
    """Events of every shape a policy may let out, as the redactor writes them: C (and the
    Python tier without it) writes the reference's bytes for each, in every format."""
    lines = [_encode(e) for e in events]
    formats = TABLE if table else None
    for fmt in FORMATS:
        with_c, without = encoders(fmt, formats)
        want = reference(fmt, lines, formats)
        assert with_c.encode_lines(lines) == want
        assert without.encode_lines(lines) == want


_REFUSED = [
    b'{"id": "a","action":"user.created"}',                         # whitespace
    b'{"id":"a\\/b","action":"user.created"}',                       # an escape msgspec never writes
    b'{"id":"\\u0041","action":"user.created"}',
    b'{"id":"a","action":"user.created","metadata":{"k":"\\u001F"}}',  # uppercase hex
    b'{"id":"a","action":"user.created","metadata":{"k":"\\ud800"}}',  # a lone surrogate
    b'{"id":"a","action":"user.created","metadata":{"k":"\xff"}}',     # invalid UTF-8
    b'{"id":"a","action":"user.created","metadata":{"k":"\xed\xa0\x80"}}',
    b'{"id":"a","action":"user.created"}x',                           # trailing bytes
    b'{"id":"a","action":"user.created"',                             # cut
    b'{"id":"a","id":"b","action":"user.created"}',                   # a key twice
    b'{"id":"a","action":"role.granted","metadata":{"role":"x","role":"y"}}',
    b'{"id":"a","action":"user.created","metadata":{"n":-0}}',
    b'{"id":"a","action":"user.created","metadata":' + b"[" * 80 + b"]" * 80 + b"}",
    b'{"id":"a","action":"us\\ter.created"}',                         # an action with escapes
    b'{"id":"a","action":"user.created","occurred_at":"2024-05-01T09:00:00+00:00"}',
    b'{"id":"a","action":"user.created","actor":{"type":5}}',        # a type the view refuses
    b'{"id":"a","action":"user.created","targets":[null]}',
    b'{"id":"a","action":"user.created","targets":{"type":"user"}}',
    b'[1,2]', b'"x"', b'', b'{}',
]
_SOMETIMES = {b"{}", _REFUSED[10], _REFUSED[14]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_lines_c_refuses_are_answered_as_the_python_tier_answers_them(fmt):
    """Lines outside the input contract or the typed view: C hands each back, and the
    result (bytes, or the error raised) is the Python tier's, one line at a time and
    inside a batch of good lines."""
    good = corpus_lines()[:3]
    for table in (None, TABLE):
        with_c, without = encoders(fmt, table)
        for line in _REFUSED:
            _formats_c.handed_back()
            got = outcome(with_c.encode_lines, [line])
            assert got == outcome(without.encode_lines, [line]), line
            # "{}" (no time: OCSF and ECS hand it back for the epoch, CEF leaves rt out),
            # another time form (CEF: Python reads it), a metadata key twice only where
            # OCSF reads the role from it
            refused = _formats_c.handed_back()
            assert refused == 1 or line in _SOMETIMES, line
            if not isinstance(got, type):
                assert outcome(with_c.encode_lines, [*good, line, *good]) == \
                    outcome(without.encode_lines, [*good, line, *good])


def test_ipv6_locations_are_normalised_by_python():
    """An IPv6 location (any text with a colon) is read by event.ip_or_none, as in the
    Python tiers: normalised in every format, not handed back."""
    line = _encode({"id": "a", "action": "api.called", "occurred_at": "2024-05-01T09:00:00Z",
                    "context": {"location": "2001:DB8:0:0::1", "user_agent": "curl"}})
    for fmt in FORMATS:
        with_c, _ = encoders(fmt)
        _formats_c.handed_back()
        (out,) = with_c.encode_lines([line])
        assert _formats_c.handed_back() == 0
        assert b"2001:db8::1" in out and out == reference(fmt, [line])[0]


def test_an_ipv6_zone_index_is_left_out_of_every_ip_field():
    """``fe80::1%eth0`` (a zone index: an interface of the client's own host) is written
    as ``fe80::1`` in ECS source.ip, OCSF src_endpoint.ip and CEF c6a2, by both tiers:
    Elasticsearch's ip type refuses an address with a zone, and the document with it."""
    line = _encode({"id": "a", "action": "api.called", "occurred_at": "2024-05-01T09:00:00Z",
                    "context": {"location": "fe80::1%eth0"}})
    for fmt in FORMATS:
        with_c, without = encoders(fmt)
        (out,) = with_c.encode_lines([line])
        assert out == without.encode_lines([line])[0] == reference(fmt, [line])[0]
        assert b"%eth0" not in out and b"fe80::1" in out, fmt
    ecs = json.loads(encoders("ecs")[0].encode_lines([line])[0])
    ocsf = json.loads(encoders("ocsf")[0].encode_lines([line])[0])
    assert ecs["source"]["ip"] == ocsf["src_endpoint"]["ip"] == "fe80::1"


@pytest.mark.parametrize("location", ["::ffff:192.0.2.7", "::FFFF:192.0.2.7",
                                      "::ffff:c000:207", "0:0:0:0:0:FFFF:C000:0207",
                                      "::ffff:192.0.2.7%eth0", "::Ffff:c000:0207%2"])
def test_an_ipv4_mapped_address_is_written_as_the_ipv4_client(location):
    """``::ffff:192.0.2.7`` (what a dual-stack server sees of an IPv4 client), in any
    spelling, with or without a zone index, is ``192.0.2.7`` in ECS source.ip, OCSF
    src_endpoint.ip and CEF src (not c6a2), in every tier: SIEMs key on the dotted form."""
    line = _encode({"id": "a", "action": "api.called", "occurred_at": "2024-05-01T09:00:00Z",
                    "context": {"location": location}})
    outs = {}
    for fmt in FORMATS:
        with_c, without = encoders(fmt)
        (outs[fmt],) = with_c.encode_lines([line])
        assert outs[fmt] == without.encode_lines([line])[0] == reference(fmt, [line])[0]
    assert json.loads(outs["ecs"])["source"]["ip"] == "192.0.2.7"
    assert json.loads(outs["ocsf"])["src_endpoint"]["ip"] == "192.0.2.7"
    assert outs["cef"].endswith(b" src=192.0.2.7 externalId=a") and b"c6a2" not in outs["cef"]


@pytest.mark.parametrize(("location", "ip"), [("::c000:207", "::c000:207"),
                                              ("64:ff9b::192.0.2.7", "64:ff9b::c000:207"),
                                              ("::ffff:0:c000:207", "::ffff:0:c000:207")])
def test_other_ipv6_forms_holding_an_ipv4_address_stay_ipv6(location, ip):
    """Only the mapped form is an IPv4 client; IPv4-compatible (deprecated), NAT64 and
    IPv4-translated addresses are IPv6 clients, written as IPv6 (CEF c6a2)."""
    line = _encode({"id": "a", "action": "api.called", "occurred_at": "2024-05-01T09:00:00Z",
                    "context": {"location": location}})
    for fmt in FORMATS:
        with_c, without = encoders(fmt)
        (out,) = with_c.encode_lines([line])
        assert out == without.encode_lines([line])[0] == reference(fmt, [line])[0]
        assert ip.encode() in out and b"src=" not in out, fmt


def test_bad_plans_and_arguments_raise_instead_of_writing():
    """The C entry point checks what it is given: an unknown format, plans of the wrong
    shape and a non-sequence raise errors that name the problem."""
    line = b'{"id":"a","action":"x"}'
    args = ({"x": (1, b"", b"", b"", b"", b"")}, lambda a: None, lambda s: None,
            lambda x: b"", b"", b"")
    with pytest.raises(ValueError, match="unknown format"):
        _formats_c.encode_lines(7, [line], *args)
    with pytest.raises(TypeError, match="OCSF plan"):
        _formats_c.encode_lines(0, [line], {"x": b"plan"}, *args[1:])
    with pytest.raises(TypeError, match="ECS plan"):
        _formats_c.encode_lines(1, [line], *args)
    with pytest.raises(TypeError, match="CEF plan"):
        _formats_c.encode_lines(2, [line], *args)
    with pytest.raises(TypeError, match="sequence"):
        _formats_c.encode_lines(1, 5, *args)
    assert _formats_c.encode_lines(1, [5], *args) == [b""]  # not bytes: handed back


def test_no_memory_or_reference_leak_over_many_calls():
    """A debug loop over every path of the C tier (lines answered in C, handed back,
    raising in the fallback, IPv6 read by Python, bad plans): after hundreds of rounds no
    memory is left allocated and no reference is left on the lines or the plans."""
    encs = [encoders(fmt, TABLE)[0] for fmt in FORMATS]
    raising = {x for x in _REFUSED for enc in encs if isinstance(outcome(enc.encode_lines, [x]),
                                                                type)}
    lines = corpus_lines()[:40] + [
        _encode({"id": "a", "action": "api.called", "occurred_at": "2024-05-01T09:00:00Z",
                 "context": {"location": "2001:DB8::1"}})] + [
        x for x in _REFUSED if x not in raising]
    broken = sorted(raising)
    bad_plan = {"x": (1, b"", b"", b"", b"", b"")}

    def run() -> None:
        for enc in encs:
            enc.encode_lines(lines)
            for line in broken:
                outcome(enc.encode_lines, [line])
        with pytest.raises(TypeError):
            _formats_c.encode_lines(2, [b'{"action":"x"}'], bad_plan, None, None, None, b"", b"")

    run()
    # fresh objects: constants of the code may be shared, so their counts move elsewhere
    lines, broken = [b"%s" % x for x in lines], [b"%s" % x for x in broken]
    owned = [x for x in lines + broken if len(x) > 1]  # b"" is shared by everything
    refs = [sys.getrefcount(x) for x in owned]
    plan_refs = [sys.getrefcount(p) for enc in encs for p in enc.plans.map.values()]
    growth = traced_growth(run, 300)
    assert growth < 64 << 10, growth
    assert [sys.getrefcount(x) for x in owned] == refs
    assert [sys.getrefcount(p) for enc in encs for p in enc.plans.map.values()] == plan_refs
