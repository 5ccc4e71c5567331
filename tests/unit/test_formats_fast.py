"""The fast format encoders (typed view, per-action and per-object caches) against the
reference encoders (ocsf.py, ecs.py, cef.py): the same bytes for every line, on the
corpus and on generated events of every shape, cold and with warm caches; the caches
stay bounded in entries and bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditshipd.config import parse_config
from auditshipd.formats.cef import CefEncoder
from auditshipd.formats.ecs import EcsEncoder
from auditshipd.formats.ocsf import OcsfEncoder
from auditshipd.formats.ocsf_actions import ACTIONS
from auditshipd.formats.plans import BytesCache, PlanCache
from auditshipd.formats.registry import build_encoder
from auditshipd.redaction.redactor import compile_policy

CORPUS = Path(__file__).parent / "redact_corpus" / "workos_lifecycle.jsonl"
REFERENCE = {"ocsf": OcsfEncoder, "ecs": EcsEncoder, "cef": CefEncoder}
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
OVERRIDES = parse_config('''
[formats.ocsf]
product_name = "Acme | App"
vendor_name = "Acme"
[formats.ocsf.actions]
"invoice.voided" = { class_uid = 6003, activity_id = 4 }
"report.viewed" = { class_uid = 6001, activity_id = 2, severity_id = 3 }
"user.invited" = { class_uid = 3001, activity_id = 1, severity_id = 2 }
"team.synced" = { class_uid = 3006, activity_id = 99, activity_name = "Sync" }
''').formats


def reference_lines(fmt: str, lines: list[bytes], formats: Any = None) -> list[bytes]:
    """What the reference encoder writes for each line (decoded to a dict first)."""
    ref = build_encoder(fmt, formats)  # the reference's own method, on a fresh encoder
    return [REFERENCE[fmt].encode(ref, _decode(line)) for line in lines]


def assert_same(fmt: str, lines: list[bytes], formats: Any = None) -> None:
    """The fast encoder writes the reference's bytes, with its C tier (what sinks get when
    it is built) and without it (AUDITSHIPD_FORMATS_C=0, or no compiler)."""
    expected = reference_lines(fmt, lines, formats)
    for c_tier in ("1", "0"):
        with mock.patch.dict(os.environ, {"AUDITSHIPD_FORMATS_C": c_tier}):
            fast = build_encoder(fmt, formats)
        assert type(fast) is not REFERENCE[fmt]  # the fast one is what sinks get
        for _ in range(2):  # cold caches, then warm
            got = fast.encode_lines(lines)
            for line, want, have in zip(lines, expected, got, strict=True):
                assert have == want, (line, want, have)
        assert [fast.encode_line(x) for x in lines] == expected


def corpus_lines() -> list[bytes]:
    r = compile_policy(None)
    return [_encode(r(json.loads(x))) for x in CORPUS.read_bytes().splitlines()]


@pytest.mark.parametrize("fmt", ["ocsf", "ecs", "cef"])
def test_corpus_bytes_match_the_reference(fmt):
    """Every corpus event, redacted by the default policy: the fast encoder writes the
    reference's bytes, with the built-in table and with TOML overrides."""
    lines = corpus_lines()
    assert_same(fmt, lines)
    assert_same(fmt, lines, OVERRIDES)


_text = st.one_of(st.sampled_from(["", "user", "admin", "group", "invitation", "api_key",
                                   "ada@acme.test", "Ada | \"L\" = \\x", "203.0.113.7",
                                   "2001:DB8::1", "Berlin", "é\u2028\n\r"]),
                  st.text(max_size=12))
_odd = st.one_of(st.none(), st.integers(-3, 3), st.booleans(), st.floats(allow_nan=False))
_party = st.one_of(
    st.fixed_dictionaries({}, optional={"type": _text, "email": _text, "name": _text,
                                        "extra": _text}),
    st.fixed_dictionaries({"type": _odd}), st.none(), _text)
_json = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12)
                     | st.floats(allow_nan=False, allow_infinity=False) | _text,
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3),
                     max_leaves=8)
_metadata = st.one_of(
    _json, st.fixed_dictionaries({}, optional={"role": _json, "new_role": _text, "to": _text,
                                               "note": _text}))
_time = st.one_of(st.sampled_from(["2024-05-01T09:00:00.250Z", "2024-05-01T09:00:00.251Z",
                                   "2024-05-01T09:00:01Z", "2024-05-01T09:00:00.25+02:00",
                                   "2024-02-30T09:00:00.000Z", "2024-05-01T09:00:00.2x5Z", "",
                                   "2024-05-01T09:00:00.25\u00b2Z", "2024-05-01T09:00:0\u0661Z",
                                   "yesterday"]), _odd)
_event = st.fixed_dictionaries({}, optional={
    "id": st.one_of(_text, _odd),
    "action": st.one_of(st.sampled_from(sorted(ACTIONS) + ["invoice.voided", "report.viewed",
                                                           "team.synced", "thing.frobnicated",
                                                           "sso.login.denied", "x"]),
                        _text, _odd),
    "occurred_at": _time,
    "version": st.just(1),
    "actor": _party,
    "targets": st.one_of(st.lists(_party, max_size=3), _party),
    "organization": st.one_of(st.fixed_dictionaries({}, optional={"slug": _text, "name": _text}),
                              _odd, _text),
    "context": st.one_of(st.fixed_dictionaries({}, optional={"location": st.one_of(_text, _odd),
                                                             "user_agent": _text}),
                         _odd),
    "metadata": _metadata,
})


_str_party = st.fixed_dictionaries({}, optional={"type": _text, "email": _text, "name": _text})
_well_typed = st.fixed_dictionaries({
    "id": _text,
    "action": st.one_of(st.sampled_from(sorted(ACTIONS) + ["invoice.voided", "report.viewed",
                                                           "team.synced", "thing.frobnicated"]),
                        _text),
    "occurred_at": st.one_of(
        st.datetimes(min_value=__import__("datetime").datetime(1990, 1, 1)).map(
            lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"),
        _time.filter(lambda t: isinstance(t, str))),
}, optional={
    "actor": st.one_of(_str_party, st.none()),
    "targets": st.one_of(st.lists(_str_party, max_size=3), st.none()),
    "organization": st.one_of(st.fixed_dictionaries({}, optional={"slug": _text, "name": _text}),
                              st.none()),
    "context": st.one_of(st.fixed_dictionaries({}, optional={"location": _text,
                                                             "user_agent": _text}), st.none()),
    "metadata": _metadata,
})


@settings(max_examples=400, deadline=None)
@given(events=st.lists(st.one_of(_well_typed, _event), min_size=1, max_size=6),
       overrides=st.booleans())
def test_generated_events_match_the_reference(events, overrides):
    """Events of any shape a policy may let out (absent, null, empty and odd-typed fields,
    escapes, several targets, falsy metadata, unreadable times, table overrides): the
    fast encoders write the reference's bytes for each (msgspec's compact lines, as the
    redactor writes them)."""
    lines = [_encode(e) for e in events]
    for fmt in ("ocsf", "ecs", "cef"):
        assert_same(fmt, lines, OVERRIDES if overrides else None)


def test_caches_are_bounded_in_entries_and_bytes():
    """Distinct, long keys (a hostile stream of actors or actions) never grow a cache
    past its byte budget or entry count, and it keeps answering."""
    cache: BytesCache[int] = BytesCache(len, max_entries=100, max_bytes=64 << 10)
    for i in range(5000):
        key = b"%d" % i * (1 + i % 300)
        assert cache.map.get(key) or cache.fill(key) == len(key)
        assert len(cache) <= 100 and cache.size_bytes <= 64 << 10
    assert cache.fill(b"x" * (1 << 20)) == 1 << 20  # too big to keep, still answered
    assert b"x" * (1 << 20) not in cache.map
    plans: PlanCache[str] = PlanCache(str.upper, max_entries=50, max_bytes=32 << 10)
    for i in range(3000):
        assert plans.get(f"a{i}." * (i % 100)) == f"A{i}." * (i % 100)
        assert len(plans) <= 50 and plans.size_bytes <= 32 << 10
