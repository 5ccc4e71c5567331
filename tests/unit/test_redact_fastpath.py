"""Differential tests: ``Redactor.redact_line`` is ``encode(Redactor(decode(line)))``, byte for byte.

Arbitrary events (the planted-id events of test_redact_props, then mangled: fields of
the wrong type, missing or empty required fields, unicode, nested lists, non-objects),
arbitrary bytes (truncated and corrupted lines), in drop, mask and hash modes and with
custom policies (nested paths, list paths, wildcards with children, free-form leaves,
custom regexes that disable the prefilter, a root wildcard), each with its C tier
(``auditshipd.redaction._redact_c``) and on the Python tiers alone.
"""

from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_redact_props import events, free_form, internal_id, planted

from auditshipd.errors import DropEvent
from auditshipd.redaction.defaults import DEFAULT_ID_VALUE_PATTERNS, DEFAULT_KEEP_VALUE_PATTERNS
from auditshipd.redaction.events import check_event
from auditshipd.redaction.redactor import compile_policy

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # each example compiles or runs a policy
KEY = "fastpath-test-key-0123456789"
POLICIES = {
    "drop": compile_policy({}),
    "mask": compile_policy({"action": "mask"}),
    "hash": compile_policy({"action": "hash", "hash_key": KEY}),
    "nested": compile_policy({"allow": [
        "actor.email", "actor.profile.name", "actor.profile.tags[]", "groups[].members[].email",
        "groups[].name", "labels.*.name", "labels.default", "matrix[][]", "metadata",
        "context.*", "targets[]", "organization.slug", "organization.*",
    ], "action": "hash", "hash_key": KEY}),
    "custom-regex": compile_policy({
        "action": "mask", "id_value_patterns": [r"EMP-\d{4}", *DEFAULT_ID_VALUE_PATTERNS[:3]],
        "keep_value_patterns": [r"acme_[a-z0-9]{8}", *DEFAULT_KEEP_VALUE_PATTERNS],
        "id_key_patterns": ["*_id", "id"],
    }),
    "no-keep": compile_policy({"action": "hash", "hash_key": KEY, "keep_value_patterns": [],
                               "allow": ["actor.email", "metadata.*", "targets[].email"]}),
    "root-wildcard": compile_policy({"allow": ["*"], "action": "mask"}),
}
# The same policies on the Python tiers alone (the C tier answers for most lines first).
POLICIES.update({f"{name}-python": type(r)(r.policy, c_tier=False)
                 for name, r in list(POLICIES.items()) if r.fast_path is not None and r.fast_path.c_plan is not None})
assert len(POLICIES) > 8
_encode = msgspec.json.encode


def reference(redactor, line: bytes) -> tuple[str, object]:
    """What decode -> check -> Redactor -> encode gives: ("ok", bytes) or (error class, reason)."""
    try:
        obj = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return "DecodeError", None
    reason = check_event(obj)
    if reason is not None:
        return "DropEvent", reason
    return "ok", _encode(redactor(obj))


def fused(redactor, line: bytes) -> tuple[str, object]:
    try:
        return "ok", redactor.redact_line(line)
    except msgspec.DecodeError:
        return "DecodeError", None
    except DropEvent as exc:
        return "DropEvent", exc.reason


def assert_same(line: bytes) -> None:
    for name, redactor in POLICIES.items():
        assert fused(redactor, line) == reference(redactor, line), (name, line)
        good, bad = redactor.redact_lines([line, line])
        kind, value = reference(redactor, line)
        if kind == "ok":
            assert (good, bad) == ([value, value], []), name
        else:
            assert good == [] and [i for i, _ in bad] == [0, 1], name
            if kind == "DropEvent":
                assert bad[0][1] == value
            else:
                assert bad[0][1].startswith("invalid JSON: ")


# -- strategies ----------------------------------------------------------------------------

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
PATHS = [
    ("actor",), ("actor", "email"), ("actor", "name"), ("actor", "type"), ("actor", "profile"),
    ("actor", "profile", "name"), ("actor", "profile", "tags"), ("targets",), ("organization",),
    ("organization", "slug"), ("metadata",), ("metadata", "nested"), ("context",),
    ("context", "location"), ("groups",), ("labels",), ("labels", "default"), ("matrix",),
    ("version",), ("id",), ("action",), ("occurred_at",),
]


@st.composite
def mangled_events(draw) -> dict:
    """A planted-id event with some fields replaced by arbitrary values or removed."""
    ev, _ = draw(events())
    ids: list[str] = []
    ev["actor"]["profile"] = {"name": draw(st.text(max_size=10)), "tags": draw(st.lists(planted(ids), max_size=3)),
                              "id": draw(internal_id)}
    ev["groups"] = [{"name": draw(planted(ids)), "members": [{"email": "a@b.co", "user_id": "x"}]}]
    ev["labels"] = {"red": {"name": "Red", "color": "#f00"}, "user_id": {"name": "x"},
                    "default": draw(free_form(ids))}
    ev["matrix"] = [[1, draw(planted(ids))], draw(free_form(ids))]
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PATHS))
        node = ev
        for step in path[:-1]:
            node = node.get(step) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        choice = draw(st.integers(0, 3))
        if choice == 0:
            node.pop(path[-1], None)
        elif choice == 1:
            node[path[-1]] = ""
        else:
            node[path[-1]] = draw(json_value)
    return ev


# -- the differential tests ----------------------------------------------------------------


@SETTINGS
@given(data=events())
def test_realistic_events_give_identical_bytes(data):
    """Planted-id events: redact_line gives exactly encode(Redactor(decode(line)))."""
    ev, _ = data
    assert_same(_encode(ev))


@SETTINGS
@given(ev=mangled_events())
def test_mangled_events_give_identical_bytes_or_reason(ev):
    """Wrong types, missing or empty required fields: same bytes, or the same DropEvent reason."""
    assert_same(_encode(ev))


@SETTINGS
@given(value=json_value)
def test_any_json_value(value):
    """Any JSON document (mostly not an event): same result or the same error class."""
    assert_same(_encode(value))


@SETTINGS
@given(data=events(), cut=st.integers(0, 2000), flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)),
                                                                max_size=3))
def test_corrupted_lines(data, cut, flips):
    """Truncated lines and flipped bytes (invalid JSON, invalid UTF-8): same error class."""
    ev, _ = data
    line = bytearray(_encode(ev))
    for pos, byte in flips:
        if pos < len(line):
            line[pos] = byte
    raw = bytes(line[: max(1, len(line) - cut % 40)]) if cut % 3 == 0 else bytes(line)
    assert_same(raw)


@SETTINGS
@given(ev=mangled_events(), extra=st.dictionaries(st.text(max_size=6), json_value, max_size=3))
def test_duplicate_keys_last_one_wins(ev, extra):
    """A key repeated in the line: both paths keep the last value (as msgspec does for dicts)."""
    line = _encode(ev)
    tail = _encode(extra)[1:-1]
    if tail:
        assert_same(line[:-1] + b"," + tail + b"}")
    dup = _encode({"actor": ev.get("actor"), "metadata": ev.get("metadata")})[1:-1]
    assert_same(line[:-1] + b"," + dup + b"}")


# -- examples ------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b'{"id":"a","action":"b","occurred_at":"c","actor":{"email":123}}',
    b'{"id":"a","action":"b","occurred_at":"c","actor":"x"}',
    b'{"id":"a","action":"b","occurred_at":"c","actor":null,"targets":[null,{"email":"e"}]}',
    b'{"id":"a","action":"b","occurred_at":"c","version":true}',
    b'{"id":"a","action":"b","occurred_at":"c","version":1.0}',
    b'{"id":"a","action":"b","occurred_at":"c","version":123456789012345678901234567890}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"a":{"user_id":"x"},"b":[1,{"token":"t"}]}}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"usr_01HZX8K2M3N4P5Q6R7S8T9V0U9":1,"k":2}}',
    b'{"id":"a","action":"b","occurred_at":"c","metadata":{"x":"h:1234567890123456"}}',
    b' {"id" : "a", "action":"b","occurred_at":"c", "actor": {"email" : "\\u00e9@x.io"}} ',
    b'{"id":"caf\xc3\xa9","action":"b","occurred_at":"c","actor":{"name":"Jos\xc3\xa9"}}',
])
def test_examples(line):
    """Shapes the fast path hands to its loose or slow tiers give the same result."""
    assert_same(line)


@pytest.mark.parametrize(("line", "reason"), [
    (b"[1,2]", "not a JSON object (a JSON list)"),
    (b'"x"', "not a JSON object (a JSON str)"),
    (b'{"action":"b","occurred_at":"c"}', "schema: 'id' is missing or not a non-empty string"),
    (b'{"id":"a","action":"","occurred_at":"c"}', "schema: 'action' is missing or not a non-empty string"),
    (b'{"id":"a","action":"b","occurred_at":5}', "schema: 'occurred_at' is missing or not a non-empty string"),
])
def test_drop_event_reasons(line, reason):
    """Lines that are not events raise DropEvent with the pipeline's quarantine reason."""
    with pytest.raises(DropEvent) as info:
        POLICIES["drop"].redact_line(line)
    assert info.value.reason == reason


@pytest.mark.parametrize("line", [
    b'{"id":"a","action":"b","occurred_at":"c","x":"\xff"}',
    b'{"id":"a","action":"b","occurred_at":"c","x":"\xed\xa0\x80"}',
    b'{"id":"a","action":"b","occurred_at":"c"',
    b'{"id":"a","action":"b","occurred_at":"c","x":[1,]}',
    b'{"id":"a","action":"b","occurred_at":"c","x":' + b"[" * 3000 + b"]" * 3000 + b"}",
])
def test_invalid_json_or_utf8_raises_decode_error(line):
    """Invalid JSON, invalid UTF-8 (even in a dropped field), too deep: msgspec.DecodeError."""
    for redactor in POLICIES.values():
        with pytest.raises(msgspec.DecodeError):
            redactor.redact_line(line)


@pytest.mark.parametrize("action", ["drop", "mask"])
@pytest.mark.parametrize("part", ["metadata", "targets"])
def test_nesting_too_deep_to_walk_drops_the_event_with_a_reason(part, action):
    """Lists nested 700 deep in free-form data: msgspec decodes them, the walk of the
    free-form value cannot go that deep. Every tier (and the dict path) raises DropEvent
    with the same reason, never RecursionError: the daemon quarantines the line with
    it and `auditshipd redact` reports it."""
    deep = b"[" * 700 + b"]" * 700
    line = b'{"id":"a","action":"b","occurred_at":"c","%s":[%s]}' % (part.encode(), deep)
    r = compile_policy({"allow": ["metadata", "targets[]"], "action": action})
    for redactor in (r, type(r)(r.policy, c_tier=False)):
        with pytest.raises(DropEvent) as info:
            redactor.redact_line(line)
        assert info.value.reason == "nested too deeply to redact"
    with pytest.raises(DropEvent) as info:
        r(msgspec.json.decode(line))
    assert info.value.reason == "nested too deeply to redact"


def test_redact_lines_reports_bad_lines_by_index():
    """redact_lines: outputs in order, (index, reason) for the lines that cannot be shipped."""
    r = POLICIES["drop"]
    lines = [b'{"id":"a","action":"b","occurred_at":"c","secret":1}', b"nope", b"[]",
             b'{"id":"d","action":"e","occurred_at":"f"}']
    good, bad = r.redact_lines(lines)
    assert good == [b'{"id":"a","action":"b","occurred_at":"c"}', b'{"id":"d","action":"e","occurred_at":"f"}']
    assert [i for i, _ in bad] == [1, 2]
    assert bad[0][1].startswith("invalid JSON: ") and bad[1][1] == "not a JSON object (a JSON list)"


def test_guarded_id_regex_finds_the_same_matches():
    """The lookahead guard in front of the default id patterns changes no match."""
    from auditshipd.redaction.defaults import _GUARD

    plain = re.compile("|".join(f"(?:{p})" for p in DEFAULT_ID_VALUE_PATTERNS))
    guarded = POLICIES["drop"].policy.id_regex
    assert guarded.pattern.startswith(_GUARD)

    @settings(max_examples=500, deadline=None)
    @given(parts=st.lists(st.one_of(internal_id, planted([]), st.text(max_size=12),
                                    st.sampled_from(["Bearer ", "basic\t", "eyJ", "_", "-", "=", "/"])),
                          max_size=6))
    def check(parts):
        text = "".join(parts)
        assert [m.span() for m in guarded.finditer(text)] == [m.span() for m in plain.finditer(text)]

    check()
