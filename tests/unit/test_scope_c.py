"""The C scanner that finds each journal line's organization and time for the shared pass
(``_redact_c.scope_lines`` / ``group_lines``): what it answers must be what the Python
decode (:func:`auditshipd.delivery.scope.line_scope`) gives, and what it cannot read with
certainty it leaves to Python, so routing never depends on which one answered.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditshipd.delivery import scope as scope_mod
from auditshipd.delivery.scope import NOT_AN_OBJECT, chunk_scopes, line_scope
from auditshipd.redaction import _redact_c

SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_slug = st.one_of(st.text(max_size=10), st.sampled_from(["acme", "glo\\u0062ex", "é-org"]), _json)
_org = st.one_of(st.fixed_dictionaries({"slug": _slug}, optional={"name": st.text(max_size=5)}), _json)
_event = st.fixed_dictionaries(
    {"id": st.text(max_size=8), "action": st.sampled_from(["user.invited", "role.changed"])},
    optional={"organization": _org, "occurred_at": st.one_of(st.text(max_size=12), _json),
              "metadata": st.dictionaries(st.text(max_size=6), _json, max_size=3)},
)


def _encode(event: dict, spaces: bool) -> bytes:
    line = msgspec.json.encode(event)
    return msgspec.json.format(line, indent=0).replace(b"\n", b" ") if spaces else line


def _c_answer(line: bytes) -> tuple[object, object] | None:
    slugs, times, unsure = _redact_c.scope_lines([line], True)
    return None if unsure else (slugs[0], times[0])


@SETTINGS
@given(_event, st.booleans())
def test_c_answers_what_python_decodes(event, spaces):
    line = _encode(event, spaces)
    c = _c_answer(line)
    if c is not None:
        assert c == line_scope(line)


@SETTINGS
@given(_event, st.data())
def test_truncated_and_flipped_lines_agree_or_are_left_to_python(event, data):
    line = bytearray(_encode(event, False))
    if data.draw(st.booleans()):
        del line[data.draw(st.integers(0, len(line))):]
    else:
        for _ in range(data.draw(st.integers(1, 3))):
            line[data.draw(st.integers(0, len(line) - 1))] = data.draw(st.integers(0, 255))
    c = _c_answer(bytes(line))
    if c is not None:
        assert c == line_scope(bytes(line))


def test_plain_events_are_answered_in_c():
    """Otherwise the property tests above would prove nothing about the scanner."""
    lines = [b'{"id":"e1","organization":{"slug":"acme","name":"Acme"},"occurred_at":"2026-01-01T00:00:00Z"}',
             b' {"occurred_at" : "t", "organization" : {"id":"org_1", "slug" : "globex"} } ',
             b'{"organization":"acme"}', b'{"organization":{"slug":5}}', b'{}', b'{"metadata":{"a":[1,2.5e3,true,null]}}']
    slugs, times, unsure = _redact_c.scope_lines(lines, True)
    assert unsure == []
    assert slugs == ["acme", "globex", None, None, None, None]
    assert times == ["2026-01-01T00:00:00Z", "t", None, None, None, None]
    assert _redact_c.scope_lines(lines, False)[1] is None


def test_unusual_lines_are_left_to_python():
    lines = [b'[1]', b'{"a":1} x', b'{"organization":{"slug":"a\\u0062"}}', b'{"organ\\u0069zation":{}}',
             b'{"organization":{"slug":"a"},"organization":{"slug":"b"}}', b'{"occurred_at":5}',
             b'{"a":01}', b'{"a":"\x01"}', b'{"a":"\xff"}', b'', b'{"a":']
    assert _redact_c.scope_lines(lines, True)[2] == list(range(len(lines)))


def test_chunk_scopes_groups_in_line_order_with_and_without_c(monkeypatch):
    raw = [b'{"organization":{"slug":"a"}}', b'not json', b'{"organization":{"slug":"b"}}',
           b'{"organization":{"slug":"a"},"occurred_at":"t"}', b'{"organization":{"slug":["x"]}}']
    want = {"a": [0, 3], NOT_AN_OBJECT: [1], "b": [2], None: [4]}
    assert chunk_scopes(raw, True) == (want, [None, None, None, "t", None])
    monkeypatch.setattr(scope_mod, "_c", None)
    assert chunk_scopes(raw, True) == (want, [None, None, None, "t", None])
    assert chunk_scopes(raw, False)[1] is None


def test_no_leak_of_memory_or_references():
    lines = [b'{"organization":{"slug":"acme-%d"},"occurred_at":"2026-01-01"}' % (i % 7) for i in range(50)]
    lines += [b'{"bad":', b'{"organization":{"slug":"a\\u0062"}}']
    keys = ["a", None, "b", "a"] * 10
    for _ in range(200):  # warm up caches
        _redact_c.scope_lines(lines, True)
        _redact_c.group_lines(keys)
    gc.collect()
    refs = sys.getrefcount(None), sys.getrefcount("a")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(3000):
        _redact_c.scope_lines(lines, True)
        _redact_c.group_lines(keys)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 64 * 1024
    # A reference leaked per call would show thousands; a few come and go elsewhere.
    assert abs(sys.getrefcount(None) - refs[0]) < 100
    assert abs(sys.getrefcount("a") - refs[1]) < 100
