"""The stores' rows built from the redacted lines (portal/event_rows.py) hold exactly what
the reference definitions over the decoded event give: keyword tokens, actor, targets,
organization, id, time."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from auditshipd.portal.event_rows import (
    ACCESS_ACTIONS,
    _reference_row,
    event_row,
    first_of_each,
    indexed_text,
    line_text,
)
from auditshipd.portal.query import format_time, parse_time, search_text, tokenize
from auditshipd.portal.store import _organization, actor_key, target_keys

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_leaf = st.one_of(
    _text, st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.none(), st.sampled_from(["true", "null", "1.50", "a:1e5", '"', "\\"]),
)
_json = st.recursive(
    _leaf, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=20,
)
_party = st.one_of(
    st.none(), _text, st.fixed_dictionaries({}, optional={"email": _leaf, "name": _leaf, "type": _text}),
)
_time = st.one_of(
    st.datetimes(timezones=st.just(dt.timezone.utc)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    st.datetimes(timezones=st.just(dt.timezone.utc)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.sampled_from(["2026-01-31", "2026-01-31T10:00:00+02:00", "2026-02-30T00:00:00Z", "soon",
                     "2026-01-31T10:00:00.123456789Z", "2026-01-31t10:00:00z"]),
    _leaf,
)
_event = st.fixed_dictionaries({}, optional={
    "id": st.one_of(_text, st.integers()), "action": st.one_of(_text, st.sampled_from(sorted(ACCESS_ACTIONS))),
    "occurred_at": _time, "actor": _party, "targets": st.one_of(st.lists(_party, max_size=3), _leaf),
    "organization": st.one_of(st.none(), _text, st.fixed_dictionaries({}, optional={"slug": _leaf})),
    "metadata": _json, "context": _json,
})


@settings(max_examples=400, deadline=None)
@given(_event)
def test_rows_from_lines_match_the_reference_definitions(event: dict) -> None:
    """Whatever the event holds (escapes, floats, odd shapes, bad times), the row built from
    its line has the reference's id, action, actor, targets, organization and time, and its
    keyword text has exactly the tokens of search_text (none for access records)."""
    line = msgspec.json.encode(event)
    decoded = msgspec.json.decode(line)
    row = event_row(line)
    assert tokenize(line_text(line)) == tokenize(search_text(decoded))
    expected_text = [] if row.action in ACCESS_ACTIONS else tokenize(search_text(decoded))
    assert tokenize(row.text) == expected_text == tokenize(indexed_text(row.action, line))
    assert row.actor == actor_key(decoded)
    assert row.targets == sorted(target_keys(decoded))
    assert row.organization == _organization(decoded)
    assert row.action == str(decoded.get("action") or "")
    assert row.body == line.decode()
    reference = _reference_row(line)
    assert row.id == reference.id
    if not row.timeless:
        when = parse_time(decoded["occurred_at"])
        assert row.when == when and row.occurred_at == format_time(when)
    else:
        assert reference.timeless


def test_a_batch_keeps_the_first_line_of_each_id() -> None:
    """Ids repeated in a batch are stored once (the first line); events without an id get
    the hash of their line, so the same line twice is one event."""
    lines = [b'{"id":"a","action":"x"}', b'{"id":"a","action":"y"}', b'{"action":"z"}', b'{"action":"z"}']
    rows = [event_row(line) for line in lines]
    keep = first_of_each([r.id for r in rows])
    assert keep is not None
    rows = [rows[k] for k in keep]
    assert [(r.id, r.action) for r in rows] == [("a", "x"), (rows[1].id, "z")]
    assert rows[1].id.startswith("sha256-")


def test_keyword_text_of_spaced_json() -> None:
    """A line with spaces around its colons and commas gives the tokens of its values
    only, keys and literals left out."""
    line = b'{ "id" : "e 1" , "n" :[1, true, "k" ,null], "m" : {"d" :25, "x" : false}}'
    assert tokenize(line_text(line)) == ["e", "1", "1", "k", "25"]
