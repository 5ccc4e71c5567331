"""The C tier of the redaction fast path (``auditshipd.redaction._redact_c``).

It must be built (scripts/test.sh installs gcc and the Python headers when it can), it
must answer for realistic events (or the differential tests below would prove nothing
about it), and what it answers must be byte for byte what the Python tiers give. For the
shapes it hands back (None) the Python tiers give the result or the error.
"""

from __future__ import annotations

import string
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_redact_props import internal_id

from auditshipd.errors import DropEvent
from auditshipd.redaction.redactor import compile_policy

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # each example compiles or runs a policy
KEY = "c-tier-test-key-0123456789abcdef"
CORPUS = Path(__file__).parent / "redact_corpus" / "workos_lifecycle.jsonl"
RAWS = {
    "drop": {},
    "mask": {"action": "mask"},
    "hash": {"action": "hash", "hash_key": KEY},
    "narrow": {"allow": ["actor.email", "targets[].email", "targets[].type", "metadata.*",
                         "organization.slug", "team.lead.name"]},
}


def pair(raw: dict):
    """(redactor with the C tier, the same policy on the Python tiers only)."""
    r = compile_policy(raw) if raw else compile_policy({"action": "drop"})
    return r, type(r)(r.policy, c_tier=False)


PAIRS = {name: pair(raw) for name, raw in RAWS.items()}


def outcome(redact_line, line: bytes):
    try:
        return "ok", redact_line(line)
    except msgspec.DecodeError:
        return "DecodeError", None
    except DropEvent as exc:
        return "DropEvent", exc.reason


def test_c_tier_is_built_and_used_by_the_default_policies():
    from auditshipd.redaction import _redact_c  # noqa: F401  (fails the suite when the build was skipped)
    from auditshipd.redaction.redactor import DEFAULT_POLICY

    assert DEFAULT_POLICY.fast_path.c_plan is not None
    assert "c_redact(line)" in DEFAULT_POLICY.redact_line.__source__
    for name, (c, py) in PAIRS.items():
        assert c.fast_path.c_plan is not None, name
        assert py.fast_path.c_plan is None


def test_custom_id_patterns_and_walked_parts_stay_in_python():
    """Only the built-in patterns' prefilter run is checked in C; a policy needing the
    Redactor's walk (a wildcard with explicit children) is not compiled for C."""
    assert compile_policy({"action": "mask", "id_value_patterns": [r"EMP-\d{4}"]}).fast_path.c_plan is None
    assert compile_policy({"allow": ["labels.*.name", "labels.default"]}).fast_path.c_plan is None


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("AUDITSHIPD_REDACT_C", "0")
    assert compile_policy({"action": "mask"}).fast_path.c_plan is None


def test_corpus_answered_in_c_with_the_python_bytes():
    lines = CORPUS.read_bytes().splitlines()
    for name, (c, py) in PAIRS.items():
        answered = 0
        for line in lines:
            got = c.fast_path.c_plan.redact(line)
            if got is not None:
                answered += 1
                assert got == py.redact_line(line), (name, line)
            assert outcome(c.redact_line, line) == outcome(py.redact_line, line)
        if name in ("drop", "narrow"):
            assert answered == len(lines), name  # every corpus line is answered in C
        assert answered > 0, name


# -- C-friendly events: the C tier must answer, and agree ------------------------------------

TEXT = string.ascii_letters + string.digits + " .,:;!?()'/@#-_+=~<>&\"\\\n\t\x01"
keys = st.one_of(
    st.sampled_from(["role", "source", "reason", "user_id", "session", "token", "api_key", "note",
                     "org_internal", "request_uuid", "attempt", "ids", "tags", "change"]),
    st.text(string.ascii_lowercase + "_", min_size=1, max_size=10),
)
text_with_ids = st.one_of(
    st.text(TEXT, max_size=30),
    internal_id,
    st.builds(lambda a, i, b: f"{a} {i} {b}", st.text(TEXT, max_size=8), internal_id, st.text(TEXT, max_size=8)),
    st.emails().filter(lambda e: e.isascii() and "\\" not in e and '"' not in e),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**17), 10**17), text_with_ids,
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=10,
)


@st.composite
def c_events(draw) -> dict:
    ev = {
        "id": draw(st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=30)),
        "action": draw(st.sampled_from(["user.provisioned", "dsync.user.updated", "user.invited"])),
        "occurred_at": "2026-11-26T04:00:00Z",
    }
    optional = {
        "version": st.integers(0, 5),
        "actor": st.fixed_dictionaries({"type": st.just("user"), "email": st.emails().filter(str.isascii)},
                                       optional={"id": internal_id, "name": text_with_ids, "extra": values}),
        "targets": st.lists(st.fixed_dictionaries({"type": st.just("user")},
                                                  optional={"email": text_with_ids, "id": internal_id}), max_size=3),
        "organization": st.fixed_dictionaries({"slug": text_with_ids}, optional={"id": internal_id}),
        "metadata": st.dictionaries(keys, values, max_size=6),
        "context": st.dictionaries(keys, values, max_size=3),
        "internal_notes": values,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            ev[key] = draw(strategy)
    order = draw(st.permutations(list(ev)))
    return {k: ev[k] for k in order}


@SETTINGS
@given(ev=c_events(), indent=st.booleans())
def test_c_tier_answers_and_agrees(ev, indent):
    """Events within what C takes (no escapes in keys, no duplicate keys; escaped strings
    and floats included):
    answered in C, byte for byte the Python tiers' output, under every policy."""
    line = msgspec.json.encode(ev)
    if indent:
        line = msgspec.json.format(line, indent=2)
    for name, (c, py) in PAIRS.items():
        expected = py.redact_line(line)
        got = c.fast_path.c_plan.redact(line)
        if name != "hash":  # hash hands id-named keys to Python
            assert got is not None, (name, line)
        if got is not None:
            assert got == expected, (name, line)
        assert c.redact_line(line) == expected


@pytest.mark.parametrize("line", [
    b'{"id":"a","action":"b","occurred_at":"c","actor":{"n\\u0061me":"x"}}',  # an escaped key
    b'{"id":"a\\u0062","action":"b","occurred_at":"c"}',  # an escaped required field
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"e":"\\ud83d\\ude00"}}',  # surrogates
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"e":"\\x41"}}',  # not a JSON escape
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"e":"\\u12"}}',
    b'{"id":"a","action":"b","occurred_at":"c","dropped":"\\q"}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"amount":1e400}}',  # out of range
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"big":1234567890123456789}}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"n":-0}}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"a":1,"a":2}}',  # duplicate keys
    b'{"id":"a","action":"b","occurred_at":"c","actor":{"email":"x@y.z"},"actor":{"email":"q@r.s"}}',
    b'{"id":"a","action":"b","occurred_at":"c","actor":"x"}',
    b'{"id":"a","action":"b","occurred_at":"c","actor":{"email":{"a":1}}}',
    b'{"id":"a","action":"b","occurred_at":"c","targets":[null]}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":null}',
    b'{"id":"a","action":"b","occurred_at":"c","version":"1"}',
    b'{"id":"a","action":"b","occurred_at":"c","version":1.0}',
    b'{"id":"","action":"b","occurred_at":"c"}',
    b'{"action":"b","occurred_at":"c"}',
    b'{"id":"a","action":"b","occurred_at":"c"} x',
    b'{"id":"a","action":"b","occurred_at":"c",}',
    b'{"id":"a","action":"b","occurred_at":"c","x":[1,]}',
    b'{"id":"a","action":"b","occurred_at":"c","x":"\x01"}',
    b'{"id":"a","action":"b","occurred_at":"c","x":"\xff"}',
    b'{"id":"a","action":"b","occurred_at":"c","x":01}',
    b'{"id":"a","action":"b","occurred_at":"c","x":tru}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":' + b'{"a":' * 70 + b"1" + b"}" * 70 + b"}",
    b"[1]",
    b'"x"',
    b"",
])
def test_given_back_to_python(line):
    """Shapes the C tier does not write itself: None from C, and the Python tiers' result."""
    for name, (c, py) in PAIRS.items():
        assert c.fast_path.c_plan.redact(line) is None, (name, line)
        assert outcome(c.redact_line, line) == outcome(py.redact_line, line), name


@pytest.mark.parametrize("line", [
    b'{"id":"a","action":"b","occurred_at":"c","x":"\xc3\xa9","metadata":{"who":"Jos\xc3\xa9 usr_01HZX8K2M3N4P5Q6R7S8T9V0U9"}}',
    b' \n{ "id" : "a" ,\t"action":"b","occurred_at":"c", "metadata" : { "k" : [ 1 , "x" , { } , [ ] ] } }\n',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"user_id":{"deep":[1,2,{"x":"y"}]},"k":"v"}}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"list":["usr_01HZX8K2M3N4P5Q6R7S8T9V0U9","keep"]}}',
    b'{"id":"a","action":"b","occurred_at":"c","actor":{"name":"usr_01HZX8K2M3N4P5Q6R7S8T9V0U9"}}',
    b'{"id":"a","action":"b","occurred_at":"c","actor":{},"targets":[],"metadata":{}}',
    b'{"id":"a","action":"b","occurred_at":"c","other":1.5e400,"metadata":{"x":-12}}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"f":[1.50,1E2,-0.0,2.5e-5,0.1e1,1e-400,4.9e-324]}}',
    b'{"id":"a","action":"b","occurred_at":"c","actor":{"name":"J\\u00f6rg \\"JJ\\" \\/ \\\\"}}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"note":"by usr_01HZX8K2M3N4P5Q6R7S8\\u0054\\u0039V0U9\\n",'
    b'"l":["\\t","\\u00e9 org_01HZX8K2M3N4P5Q6R7S8T9V0U9"]},"skipped":"\\b\\f\\r\\u0000"}',
    b'{"id":"a","action":"b","occurred_at":"c","actor":{"name":123456789012345678.5},"metadata":{"p":0.30000000000000004}}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"usr_01HZX8K2M3N4P5Q6R7S8T9V0U9":1,"k":2}}',
])
def test_answered_in_c(line):
    """UTF-8 text, whitespace, id-named keys over nested values, ids in lists and leaves,
    empty parts, a float in a dropped field, floats in any spelling: answered in C, as
    Python would."""
    for name, (c, py) in PAIRS.items():
        got = c.fast_path.c_plan.redact(line)
        if name in ("drop", "narrow"):
            assert got is not None, name
        if got is not None:
            assert got == py.redact_line(line), name


def test_key_and_clean_caches_survive_many_distinct_keys():
    """More distinct keys and id-looking strings than the C caches hold (they empty and refill)."""
    c, py = PAIRS["drop"]
    for i in range(12000):
        line = msgspec.json.encode({"id": "e", "action": "a", "occurred_at": "t", "metadata": {
            f"k{i}": f"Mozilla{i:012d}abcdef", f"k{i}_id": "x", "note": f"ref usr_01HZX8K2M3N4P5Q6R7S8T{i:05d}"}})
        got = c.fast_path.c_plan.redact(line)
        assert got is not None and got == py.redact_line(line)


def test_hash_mode_hashes_string_values_in_c_and_hands_back_maps():
    c, py = PAIRS["hash"]
    line = (b'{"id":"e","action":"a","occurred_at":"t","metadata":{"user_id":"usr_01HZX8K2M3N4P5Q6R7S8T9V0U9",'
            b'"session":"s3cr3t","k":"v","deep":[{"api_key":"key_live_abc"}]}}')
    got = c.fast_path.c_plan.redact(line)
    assert got is not None and got == py.redact_line(line)
    meta = msgspec.json.decode(got)["metadata"]
    assert meta["user_id"] == c.hash_value("usr_01HZX8K2M3N4P5Q6R7S8T9V0U9")
    assert meta["session"] == c.hash_value("s3cr3t") and meta["k"] == "v"
    assert meta["deep"] == [{"api_key": c.hash_value("key_live_abc")}]
    # Already a hash (a replayed event): kept as it is, as Python does.
    again = got.replace(b'"k":"v"', b'"k":"w"')
    assert c.fast_path.c_plan.redact(again) == py.redact_line(again)
    assert msgspec.json.decode(c.fast_path.c_plan.redact(again))["metadata"]["user_id"] == meta["user_id"]
    for value in (b'{"a":1}', b"[1]", b"7", b"null"):
        nested = b'{"id":"e","action":"a","occurred_at":"t","metadata":{"user_id":' + value + b"}}"
        assert c.fast_path.c_plan.redact(nested) is None
        assert c.redact_line(nested) == py.redact_line(nested)


def test_every_truncation_and_random_byte_flips_agree_with_python():
    """Each prefix of realistic lines, and lines with bytes flipped to JSON syntax, escapes,
    NUL or invalid UTF-8: the C tier answers as Python does or hands the line back
    (scripts/asan_redact_c.sh runs this module under AddressSanitizer)."""
    import random

    rng = random.Random(5)
    answered = 0
    for line in CORPUS.read_bytes().splitlines()[:10]:
        candidates = [line[:i] for i in range(len(line) + 1)]
        for _ in range(60):
            b = bytearray(line)
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b))] = rng.choice(b'{}[]",:0123456789.eE-+ tfn\\\x00\x80\xc3\xff_aZ')
            candidates.append(bytes(b))
        for cand in candidates:
            for name, (c, py) in PAIRS.items():
                got = c.fast_path.c_plan.redact(cand)
                if got is not None:
                    answered += 1
                    assert got == py.redact_line(cand), (name, cand)
                assert outcome(c.redact_line, cand) == outcome(py.redact_line, cand), (name, cand)
    assert answered > 100


@pytest.mark.parametrize("special", [b'\\"', b"\\\\", b"\\n", b"\\u00e9", b"\xc3\xa9", b"\xe2\x80\xa8",
                                     b"\x01", b"\x1f", b"\x7f", b"\xff"])
def test_string_scan_finds_every_stop_at_every_offset(special):
    """The string scan reads eight bytes at a time: a quote, an escape, a control byte or
    a non-ASCII one at each offset of short and long strings gives the Python result."""
    c, py = PAIRS["drop"]
    for pos in range(0, 20):
        for tail in (0, 1, 7, 8, 9, 23):
            value = b"a" * pos + special + b"b" * tail
            line = (b'{"id":"e","action":"a","occurred_at":"t","metadata":{"k":"' + value
                    + b'","n":"' + value + b'x"}}')
            got = c.fast_path.c_plan.redact(line)
            if got is not None:
                assert got == py.redact_line(line), line
            assert outcome(c.redact_line, line) == outcome(py.redact_line, line), line
            if special in (b'\\"', b"\\\\", b"\\n", b"\\u00e9", b"\xc3\xa9", b"\x7f"):
                assert got is not None, line


_ULID = "01H8ZK3Q4R5S6T7V8W9X0Y1Z2A"


@pytest.mark.parametrize("value", [
    f"/orgs/org_{_ULID}/members?email=ada@acme.com",
    f"https://app.example.com/users/user_{_ULID}?invited=ada@acme.com",
    f"see /memberships/om_{_ULID}&notify=ada@acme.com",
])
def test_an_id_in_a_url_before_an_email_is_removed_the_email_kept(value):
    """The e-mail keep pattern never starts inside a URL's path or query: the id before
    the address is still seen (every tier, the same bytes)."""
    r, py = pair({})
    line = msgspec.json.encode({"id": "e1", "action": "a", "occurred_at": "2026-01-01T00:00:00Z",
                                "metadata": {"link": value}})
    for redact in (r.redact_line, py.redact_line):
        out = redact(line)
        assert _ULID.encode() not in out and b"ada@acme.com" in out, out
    assert r.redact_line(line) == py.redact_line(line)


@pytest.mark.parametrize("key", ["userIDs", "memberIDs", "orgIDs", "user_id ", "Org ID"])
def test_plural_acronym_and_spaced_id_keys_are_id_keys(key):
    """userIDs is user_ids (not user_i_ds), "user_id " is user_id: their values never
    leave, short numbers included."""
    r, py = pair({})
    line = msgspec.json.encode({"id": "e1", "action": "a", "occurred_at": "2026-01-01T00:00:00Z",
                                "metadata": {key: [48213, 99120], "keep": "yes"}})
    for redact in (r.redact_line, py.redact_line):
        out = redact(line)
        assert b"48213" not in out and b'"keep":"yes"' in out, out
