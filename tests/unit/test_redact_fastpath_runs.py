"""Differential tests for the strict tier's byte-level shortcuts (see redact_fast).

The strict tier decodes free-form maps as dicts (nested maps and lists included),
handles id-named keys in place at any depth, encodes, and then looks at the encoded
bytes: no run of 16 token characters after the always-kept fields means no string needs
the id regexes; otherwise each string value holding a run is checked (and, when it only
changes, spliced) in the bytes, and only strings that would be removed whole, keys, escapes
or non-ASCII text send the event to the slower scan of the decoded event. These tests
aim values at each of those branches and compare with encode(Redactor(decode(line))).
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_redact_fastpath import POLICIES, SETTINGS, assert_same
from test_redact_props import internal_id, planted

from auditshipd.redaction.redactor import compile_policy

_encode = msgspec.json.encode

# Strings around the prefilter's edge: runs of 15/16+ token characters that are not ids,
# ids alone (removed whole by "drop"), ids inside text, hash-looking and masked values,
# escapes, quotes, non-ASCII, and text that looks like JSON syntax.
RUNS = ["google_workspace", "Go-http-client/2.0", "abcdefghijklmno", "abcdefghijklmnop",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "h:1234567890123456", "h:0123456789abcdef",
        "[redacted]", "1234567890123456", "12345678901234567890", "x" * 16 + "@acme.com",
        "user_01HZX8K2M3N4P5Q6R7S8T9V0U9@acme.com", "Bearer abcdefghijklmnop1234",
        "a\"b", "back\\slash", "new\nline", "caf\u00e9 user_01HZX8K2M3N4P5Q6R7S8T9V0U9",
        "\u00a0" * 3, '":"', '","session_id":"', "}", "{", "[", "", " ", "\u2028",
        "org_01HZX8K2M3N4P5Q6R7S8T9V0U9", "see org_01HZX8K2M3N4P5Q6R7S8T9V0U9 and x",
        "Bearer\u00a0abcdefghijklmnop1234", "baſic abcdefghijklmnop1234"]
KEYS = ["source", "role", "attempt", "request_id", "membership_id", "api_key_id", "session",
        "userId", "organization_membership", "user_01HZX8K2M3N4P5Q6R7S8T9V0U9", "token",
        "google_workspace", "h:1234567890123456", "a\"b", "caf\u00e9", "", "id", "secret"]

texts = st.one_of(st.sampled_from(RUNS), planted([]), internal_id,
                  st.builds(lambda a, b: a + b, st.sampled_from(RUNS), st.sampled_from(RUNS)),
                  st.text(max_size=20))
scalars = st.one_of(texts, st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.sampled_from([12345678901234567890, 1.5, -0.0, 1e300]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)),
                                            inner, max_size=5)),
    max_leaves=16,
)
free_maps = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), values, max_size=6)
fixed = st.one_of(st.sampled_from(["01KAG7VWM0CAYJ9ETTCDQ0YW8N", "user.provisioned",
                                   "2025-11-20T09:00:00.000Z", "caf\u00e9", "a\"b\\c",
                                   "organization_membership.role_changed_long"]), st.text(min_size=1, max_size=30))


@st.composite
def run_events(draw) -> dict:
    ev: dict = {"id": draw(fixed), "action": draw(fixed), "occurred_at": draw(fixed)}
    if draw(st.booleans()):
        ev["version"] = 1
    ev["organization"] = {"id": draw(internal_id), "slug": draw(texts), "name": draw(texts)}
    ev["actor"] = {"type": "user", "id": draw(internal_id), "email": draw(texts), "name": draw(texts)}
    ev["targets"] = [{"type": draw(texts), "id": draw(internal_id), "email": draw(texts)}
                     for _ in range(draw(st.integers(0, 3)))]
    ev["context"] = draw(free_maps)
    ev["metadata"] = draw(free_maps)
    return ev


@SETTINGS
@given(ev=run_events())
def test_runs_splices_and_nesting_give_identical_bytes(ev):
    """Values aimed at the byte-level check, the splice and the scan: identical bytes."""
    assert_same(_encode(ev))


@SETTINGS
@given(ev=run_events(), spaced=st.booleans())
def test_non_compact_input_gives_identical_bytes(ev, spaced):
    """Input with whitespace and escaped characters: the output is still compact and the same."""
    line = _encode(ev).decode()
    line = line.replace('":', '" : ').replace(',"', ' , "') if spaced else line.replace("/", "\\/")
    assert_same(line.encode())


def _workos_event(i: int, source: str, extra: dict) -> dict:
    """The shape bench/gen_events.py writes (nested metadata with ids at two depths)."""
    return {
        "id": f"01KAG7VWM0CAYJ9ETTCDQ0YW{i:02d}", "action": "user.provisioned",
        "occurred_at": "2025-11-20T09:00:00.000Z", "version": 1,
        "organization": {"id": "org_01H3MR9GWD7XCQ2RZ7MWBTH5EM", "slug": "initech-14", "name": "Initech"},
        "actor": {"type": "user", "id": "user_01HYPK0WDSMH5ERFRET8GSXJX1", "email": "fatima48@initech.test",
                  "name": "Fatima N."},
        "targets": [{"type": "user", "id": "user_01HYPK0WDSMH5ERFRET8GSXJX1",
                     "email": "fatima48@initech.test", "name": "Fatima N."}],
        "context": {"location": "169.3.150.85", "user_agent": "Go-http-client/2.0",
                    "session_id": "01HY6BFDVP39J62KR1XB0TA1FE"},
        "metadata": {"request_id": "xsabhwjm291fjaqk", "membership_id": "om_01HTBN168JBKX65GAPSHWDEV4G",
                     "source": source, "change": {"role": "member", "api_key_id": "key_NF232RGV1APHF8G6",
                                                  "attempt": 1, **extra}},
    }


@pytest.mark.parametrize("source", ["okta", "google_workspace", "invited by user_01HZX8K2M3N4P5Q6R7S8T9V0U9",
                                    "user_01HZX8K2M3N4P5Q6R7S8T9V0U9", "a\"b user_01HZX8K2M3N4P5Q6R7S8T9V0U9"])
@pytest.mark.parametrize("extra", [{}, {"by": "org_01HZX8K2M3N4P5Q6R7S8T9V0U9"},
                                   {"list": ["org_01HZX8K2M3N4P5Q6R7S8T9V0U9", "x", {"user_id": 1}]},
                                   {"user_01HZX8K2M3N4P5Q6R7S8T9V0U9": 1}, {"n": 12345678901234567890}])
def test_workos_shaped_events(source, extra):
    """The benchmark's event shape with clean, false-positive, spliced and removed values."""
    for i in range(3):
        assert_same(_encode(_workos_event(i, source, extra)))


def test_workos_event_output():
    """What the default policy ships for the benchmark's event shape (the ids are gone)."""
    ev = _workos_event(1, "invited by user_01HZX8K2M3N4P5Q6R7S8T9V0U9 today", {})
    out = compile_policy({}).redact_line(_encode(ev))
    assert out == (
        b'{"id":"01KAG7VWM0CAYJ9ETTCDQ0YW01","action":"user.provisioned",'
        b'"occurred_at":"2025-11-20T09:00:00.000Z","version":1,'
        b'"actor":{"type":"user","email":"fatima48@initech.test","name":"Fatima N."},'
        b'"targets":[{"type":"user","email":"fatima48@initech.test","name":"Fatima N."}],'
        b'"organization":{"slug":"initech-14","name":"Initech"},'
        b'"context":{"location":"169.3.150.85","user_agent":"Go-http-client/2.0"},'
        b'"metadata":{"source":"invited by  today","change":{"role":"member","attempt":1}}}'
    )


def test_all_policies_are_covered():
    """The differential helper runs every policy of test_redact_fastpath (drop, mask, hash, ...)."""
    assert {"drop", "mask", "hash", "nested", "custom-regex", "no-keep"} <= set(POLICIES)


@pytest.mark.parametrize("value", ["1234567890123456", "org_01HZX8K2M3N4P5Q6R7S8T9V0U9", "x 1234567890123456"])
@pytest.mark.parametrize("action", ["drop", "mask"])
def test_first_allowed_string_right_after_the_kept_fields(value, action):
    """The byte check starts right after occurred_at: an id in the very next field is found."""
    r = compile_policy({"allow": ["x"], "action": action})
    line = _encode({"id": "a", "action": "b", "occurred_at": "c", "x": value})
    assert r.redact_line(line) == _encode(r(msgspec.json.decode(line)))
    assert value.split()[-1].encode() not in r.redact_line(line)
