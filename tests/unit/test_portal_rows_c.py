"""Both stores' rows in C against the Python code they mirror: ``_tsvector_c.rows``
against sqlite_ingest._python_values, ``pg_rows`` against pg_ingest.copy_records (both over
event_rows.event_row): the same values for every line the C code answers for, None (the
Python code) for the others, and the same prepared batch with and without the extension."""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditshipd.portal import _tsvector_c  # the suite builds the extension
from auditshipd.portal.event_rows import ACCESS_ACTIONS
from auditshipd.portal.query import TIE_BITS
from auditshipd.portal.sqlite_ingest import _python_values, prepare_rows

_MISSING = object()

_ascii = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
_text = st.one_of(_ascii, st.text(max_size=6),
                  st.sampled_from(["", " ", " Ann@X.test ", "É@x.test", "user.invited",
                                   "audit_log.viewed", "tab\there", "a\\b", 'q"uote']))
_scalar = st.one_of(_text, st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.none())
_extra = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_ascii, inner, max_size=3)), max_leaves=8)
_party = st.one_of(
    st.none(), _scalar, st.lists(_scalar, max_size=2),
    st.fixed_dictionaries({}, optional={"email": _scalar, "name": _scalar, "type": _extra,
                                        "id": _extra}),
)
_org = st.one_of(st.none(), _scalar,
                 st.fixed_dictionaries({}, optional={"slug": _scalar, "name": _extra}))


def _canonical(when: dt.datetime, digits: int) -> str:
    frac = f".{when.microsecond:06d}"[: digits + 1] if digits else ""
    return when.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


_journal_time = st.builds(
    _canonical, st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 12, 31)),
    st.integers(0, 6))
_times = st.one_of(
    st.builds(_canonical,
              st.datetimes(min_value=dt.datetime(1890, 1, 1), max_value=dt.datetime(2110, 12, 31)),
              st.integers(0, 6)),
    st.sampled_from(["2024-02-29T00:00:00Z", "2025-02-29T00:00:00Z", "2026-13-01T00:00:00Z",
                     "2026-01-01T24:00:00Z", "2026-01-01T23:59:60Z", "2026-01-01T00:00:00.Z",
                     "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00+00:00",
                     "2026-01-01", "1899-12-31T23:59:59.999999Z", "2100-12-31T23:59:59Z",
                     "2101-01-01T00:00:00Z", "0001-01-01T00:00:00Z"]),
    _scalar,
)
_event = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(min_size=1, max_size=8), _scalar),
        "action": st.one_of(st.sampled_from(["user.invited", *sorted(ACCESS_ACTIONS)]), _scalar),
        "occurred_at": _times,
        "actor": _party,
        "organization": _org,
        "targets": st.one_of(st.none(), _scalar, st.lists(_party, max_size=4)),
        "context": _extra,
        "metadata": _extra,
    },
)
# What the journal writes: every head field of the type the row expects, with the
# values that matter (keys with spaces and capitals, empty e-mails, null targets).
_key = st.one_of(st.none(), _ascii, st.sampled_from(["", " Ann@X.test ", "bob", "BOB"]))
_plain_party = st.fixed_dictionaries({}, optional={"email": _key, "name": _key,
                                                   "type": st.just("user")})
_plain_event = st.fixed_dictionaries(
    {"id": st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=1, max_size=26),
     "occurred_at": _journal_time},
    optional={
        "action": st.one_of(st.none(), st.sampled_from(["user.invited", "", "x.y",
                                                         *sorted(ACCESS_ACTIONS)])),
        "actor": st.one_of(st.none(), _plain_party),
        "organization": st.one_of(st.none(), st.fixed_dictionaries(
            {}, optional={"slug": st.one_of(st.none(), _ascii), "name": _ascii})),
        "targets": st.one_of(st.none(), st.lists(st.one_of(st.none(), _plain_party), max_size=4)),
        "context": st.dictionaries(_ascii, st.one_of(_ascii, st.integers(0, 10**6)), max_size=3),
    },
)
_line = st.one_of(
    _plain_event.map(msgspec.json.encode),
    _plain_event.map(lambda e: json.dumps(e, indent=1, separators=(" , ", " : ")).encode()),
    _event.map(msgspec.json.encode),
    _event.map(lambda e: json.dumps(e, ensure_ascii=False).encode()),
    _event.map(lambda e: json.dumps(e, indent=1, separators=(" , ", " : ")).encode()),
)


def _rows(lines: list[bytes]) -> list[tuple | None]:
    return _tsvector_c.rows(lines, TIE_BITS, ACCESS_ACTIONS)


def _plain(line: bytes) -> bool:
    """A line the C code must answer for: what the journal writes, without escapes."""
    event = msgspec.json.decode(line)
    if b"\\" in line or not isinstance(event, dict):
        return False
    if not isinstance(event.get("id"), str) or not event["id"]:
        return False
    if not isinstance(event.get("action", ""), (str, type(None))):
        return False
    when = event.get("occurred_at")
    try:
        ok_time = (isinstance(when, str) and 1900 <= int(when[:4]) <= 2100 and when.endswith("Z")
                   and len(when) in (20, 22, 23, 24, 25, 26, 27)
                   and dt.datetime.fromisoformat(when).tzinfo is not None and when[10] == "T")
    except ValueError:
        ok_time = False
    if not ok_time:
        return False

    def party_ok(p: object) -> bool:
        if p is None:
            return True
        if not isinstance(p, dict):
            return False
        if not all(isinstance(p.get(k), (str, type(None))) for k in ("email", "name")):
            return False
        return (p.get("email") or p.get("name") or "").isascii()

    targets = event.get("targets")
    org = event.get("organization")
    return (party_ok(event.get("actor"))
            and (targets is None or isinstance(targets, list) and all(map(party_ok, targets)))
            and (org is None or isinstance(org, dict)
                 and isinstance(org.get("slug"), (str, type(None))))
            and not _has_float(event))


def _has_float(value: object) -> bool:
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)


@settings(max_examples=800, deadline=None)
@given(lines=st.lists(_line, min_size=1, max_size=4))
def test_c_rows_are_the_python_values_or_hand_the_line_back(lines: list[bytes]) -> None:
    """Any event (fields missing, null, of another type, twice nested, times of every shape,
    keys outside ASCII, escapes, floats, spaced JSON): the C row is the Python one value for
    value, or None; a line as the journal writes it is always answered."""
    got = _rows(lines)
    assert len(got) == len(lines)
    for line, row in zip(lines, got, strict=True):
        if row is None:
            assert not _plain(line), line
        else:
            values, timeless = _python_values(line)
            assert row == values and not timeless, line


# Lines both rows() and pg_rows() hand back to Python.
_HANDED_BACK = [
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","note":"x\\ny"}',  # an escape
    b'{"id":"a","id":"b","occurred_at":"2026-01-02T03:04:05Z"}',  # a field twice
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","actor":{"email":"a","email":"b"}}',
    b'{"id":7,"occurred_at":"2026-01-02T03:04:05Z"}',  # a number the row turns into text
    b'{"id":"","occurred_at":"2026-01-02T03:04:05Z"}',  # the id is a hash of the line
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05+00:00"}',  # not the journal's shape
    b'{"id":"a","occurred_at":"2025-02-29T03:04:05Z"}',  # no such day
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","actor":{"email":"\xc3\x89@x.test"}}',
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","actor":"ann"}',
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","n":1.5}',  # a fraction: Python's text
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","n":01}',  # not JSON
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z"} x',  # something after the object
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","n":"\xff"}',  # not UTF-8
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","n":"tab\there"}',  # a raw tab
    b'[1,2]',
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","x":' + b"[" * 70 + b"]" * 70 + b"}",
]


@pytest.mark.parametrize("line", _HANDED_BACK)
def test_lines_handed_back_to_python(line: bytes) -> None:
    assert _rows([line]) == [None]


def test_answered_rows_hold_what_the_store_writes() -> None:
    """Keys stripped and lower-cased, the e-mail before the name, targets sorted and each
    once, the time to the microsecond, an access record without keyword text."""
    line = (b'{"id":"e1","action":"user.invited","occurred_at":"2026-01-02T03:04:05.5Z",'
            b'"actor":{"email":"","name":" Ann B "},"organization":{"slug":"acme"},'
            b'"targets":[{"email":"Zed@X.test"},null,{"name":"bob"},{"email":"zed@x.test"}]}')
    access = line.replace(b"user.invited", b"audit_log.viewed")
    row, row_access = _rows([line, access])
    assert row == _python_values(line)[0]
    assert row[2:7] == ("2026-01-02T03:04:05.500000Z", "user.invited", "ann b", "acme",
                        '["bob","zed@x.test"]')
    assert row[0] >> TIE_BITS == int(dt.datetime(2026, 1, 2, 3, 4, 5, 500000,
                                                 tzinfo=dt.timezone.utc).timestamp() * 1e6)
    assert len(row[8].split()) == 4 and row[9].startswith("\n\"e1\"\n")
    assert row_access[9] == "" and row_access == _python_values(access)[0]


def _mixed_batch() -> list[bytes]:
    """Lines C answers, lines it hands back (an escape, a fraction, a key outside ASCII),
    an access record, a line without a time (the 4th) and an id given twice (the 5th)."""
    at = '"occurred_at":"2026-01-02T03:04:05.678Z"'
    return [x.encode() for x in (
        f'{{"id":"a",{at},"action":"user.invited","actor":{{"email":"A@x.test"}},"n":12}}',
        f'{{"id":"b",{at},"action":"user.invited","note":"tab\\there","n":1.5}}',
        f'{{"id":"c",{at},"action":"audit_log.viewed","actor":{{"email":"b@x.test"}}}}',
        '{"id":"d","action":"x","note":"no time"}',
        f'{{"id":"a",{at},"action":"user.invited","note":"the same id again"}}',
        f'{{"id":"e",{at},"action":"x","actor":{{"name":"Zoë"}}}}',
    )]


def test_batch_prepared_the_same_with_and_without_the_extension(monkeypatch) -> None:
    """prepare_rows over lines C answers, lines it hands back, an access record, a line
    without a time and an id given twice: the same batch with the extension and without."""
    lines = _mixed_batch()
    with_c = prepare_rows(lines)
    assert _rows(lines)[0] is not None and _rows(lines)[1] is None
    monkeypatch.setenv("AUDITSHIPD_TSVECTOR_C", "0")
    without = prepare_rows(lines)
    assert len(with_c.events) == 5
    assert with_c.timeless == without.timeless == frozenset({3})
    # the time of an event without one is when it was read (its seq base, in each row,
    # too): equal up to that
    for batch in (with_c, without):
        batch.events[3] = (None, batch.events[3][1], None, *batch.events[3][3:])
        batch.keys[3] = (None, batch.keys[3][1])
        batch.texts[3] = (None, batch.texts[3][1])
    assert with_c.bases[:3] + with_c.bases[4:] == without.bases[:3] + without.bases[4:]
    assert (with_c.events, with_c.keys, with_c.texts) == (without.events, without.keys,
                                                          without.texts)
    assert with_c.texts[2] is None  # the access record: no keyword row


def test_wrong_arguments_are_errors() -> None:
    with pytest.raises(TypeError):
        _tsvector_c.rows((b"{}",), TIE_BITS, ACCESS_ACTIONS)
    with pytest.raises(TypeError):
        _tsvector_c.rows([b"{}", "{}"], TIE_BITS, ACCESS_ACTIONS)
    with pytest.raises(TypeError):
        _tsvector_c.rows([b"{}"], TIE_BITS, set(ACCESS_ACTIONS))
    with pytest.raises(ValueError):
        _tsvector_c.rows([b"{}"], 11, ACCESS_ACTIONS)


def test_no_memory_or_reference_leak_over_many_calls() -> None:
    """rows() over answered lines, handed back ones and a type error, thousands of times:
    no memory left allocated, no reference left on the lines."""
    from c_leaks import assert_no_leak

    at = b'"occurred_at":"2026-01-02T03:04:05Z"'
    lines = [b'{"id":"%d",%s,"actor":{"email":"u%d@x"},"targets":[{"name":"t"}]}' % (i, at, i)
             for i in range(30)]
    # each line a new object: a constant's references move with whatever else holds it
    lines += [b"%s" % x for x in (b'{"id":"a","n":1.5}', b'{"id":"b","note":"\\n"}', b"{}",
                                  b"[1", b'{"id":"c",%s,"action":"audit_log.viewed"}' % at)]

    def run() -> None:
        _rows(lines)
        with pytest.raises(TypeError):
            _rows([*lines, "x"])

    assert_no_leak(run, lines)


# ---- pg_rows: the PostgreSQL store's COPY records ---------------------------------------


def _pg_rows(lines: list[bytes]) -> list[tuple | None]:
    return _tsvector_c.pg_rows(lines, ACCESS_ACTIONS)


def _python_record(line: bytes) -> tuple:
    from auditshipd.portal.event_rows import event_row
    from auditshipd.portal.pg_ingest import copy_records

    return copy_records([event_row(line, text=False)])[0]


def _pg_plain(line: bytes) -> bool:
    """A line pg_rows must answer: one rows() answers, ASCII throughout (the keyword vector
    of text outside ASCII is folded by Python)."""
    return _plain(line) and line.isascii()


@settings(max_examples=800, deadline=None)
@given(lines=st.lists(_line, min_size=1, max_size=4))
def test_c_pg_records_are_the_python_records_or_hand_the_line_back(lines: list[bytes]) -> None:
    """Any event: the C record is the Python one value for value (the time a datetime in
    UTC, the keyword vector byte for byte), or None; an ASCII line as the journal writes
    it is always answered."""
    got = _pg_rows(lines)
    assert len(got) == len(lines)
    for line, record in zip(lines, got, strict=True):
        if record is None:
            assert not _pg_plain(line), line
        else:
            assert record == _python_record(line), line
            assert record[1].tzinfo is dt.timezone.utc


@pytest.mark.parametrize("line", [
    *_HANDED_BACK,
    b'{"id":"a","occurred_at":"2026-01-02T03:04:05Z","note":"caf\xc3\xa9"}',  # outside ASCII
])
def test_pg_lines_handed_back_to_python(line: bytes) -> None:
    assert _pg_rows([line]) == [None]


def test_pg_records_hold_what_the_store_writes() -> None:
    """Keys stripped and lower-cased, targets sorted and each once, the time to the
    microsecond in UTC, an access record with an empty keyword vector."""
    from auditshipd.portal.pg_vectors import EMPTY_VECTOR

    line = (b'{"id":"e1","action":"user.invited","occurred_at":"1969-12-31T23:59:59.5Z",'
            b'"actor":{"email":"","name":" Ann B "},"organization":{"slug":"acme"},'
            b'"targets":[{"email":"Zed@X.test"},null,{"name":"bob"},{"email":"zed@x.test"}]}')
    access = line.replace(b"user.invited", b"audit_log.viewed")
    record, record_access = _pg_rows([line, access])
    assert record == _python_record(line)
    assert record[:6] == ("e1", dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=dt.timezone.utc),
                          "user.invited", "ann b", "acme", ["bob", "zed@x.test"])
    assert record[6] != EMPTY_VECTOR and record[7] == line.decode()
    assert record_access[6] == EMPTY_VECTOR and record_access == _python_record(access)


def test_pg_batch_the_same_with_and_without_the_extension(monkeypatch) -> None:
    """batch_records over lines C answers, lines it hands back, an access record, a line
    without a time and an id given twice: the same records with the extension and without,
    the first line of each id, the timeless one marked."""
    from auditshipd.portal.pg_ingest import batch_records

    lines = _mixed_batch()
    assert _pg_rows(lines)[0] is not None and _pg_rows(lines)[1] is None
    with_c = batch_records(lines)
    monkeypatch.setenv("AUDITSHIPD_TSVECTOR_C", "0")
    without = batch_records(lines)
    assert [r[0] for r in with_c.records] == ["a", "b", "c", "d", "e"]
    assert with_c.timeless == without.timeless == [False, False, False, True, False]
    # the time of an event without one is when it was read: equal up to that
    for batch in (with_c, without):
        batch.records[3] = (batch.records[3][0], None, *batch.records[3][2:])
    assert with_c.records == without.records
    assert "the same id again" not in with_c.records[0][7]


def test_pg_rows_wrong_arguments_are_errors() -> None:
    with pytest.raises(TypeError):
        _tsvector_c.pg_rows((b"{}",), ACCESS_ACTIONS)
    with pytest.raises(TypeError):
        _tsvector_c.pg_rows([b"{}", "{}"], ACCESS_ACTIONS)
    with pytest.raises(TypeError):
        _tsvector_c.pg_rows([b"{}"], set(ACCESS_ACTIONS))


def test_pg_rows_leak_no_memory_or_reference_over_many_calls() -> None:
    """pg_rows() over answered lines, handed back ones and a type error, thousands of
    times: no memory left allocated, no reference left on the lines."""
    from c_leaks import assert_no_leak

    at = b'"occurred_at":"2026-01-02T03:04:05Z"'
    lines = [b'{"id":"%d",%s,"actor":{"email":"u%d@x"},"targets":[{"name":"t"}],"n":%d}'
             % (i, at, i, i) for i in range(30)]
    lines += [b"%s" % x for x in (b'{"id":"a","n":1.5}', b'{"id":"b","note":"\\n"}', b"{}",
                                  b"[1", b'{"id":"c",%s,"action":"audit_log.viewed"}' % at,
                                  b'{"id":"d",%s,"note":"\xc3\xa9"}' % at)]

    def run() -> None:
        _pg_rows(lines)
        with pytest.raises(TypeError):
            _pg_rows([*lines, "x"])

    assert_no_leak(run, lines)
