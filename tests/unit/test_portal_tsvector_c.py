"""The keyword vectors of the PostgreSQL store in C (portal/_tsvector_c.c) against the
Python code they mirror (pg_sql.search_vector over event_rows.line_text): the same bytes
for every line the C code answers for, None (the Python code) for the others, and the
same vectors for a batch with and without the extension."""

from __future__ import annotations

import json
import struct

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditshipd.portal import _tsvector_c, pg_vectors  # the suite builds the extension
from auditshipd.portal.event_rows import ACCESS_ACTIONS, event_row, line_text, line_texts
from auditshipd.portal.pg_sql import search_vector


def _python(line: bytes) -> bytes:
    return search_vector(line_text(line))


_ascii = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=14)
_text = st.one_of(_ascii, st.text(max_size=8),
                  st.sampled_from(["UPPER lower", "a" * 300, "x_1-2.3", "", " ", "1e5", "é",
                                   "Q" * 2030, "q" * 2031]))
_leaf = st.one_of(
    _text, st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(), st.none(),
)
_json = st.recursive(
    _leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                   st.dictionaries(_text, inner, max_size=4)),
    max_leaves=24,
)
_line = st.one_of(
    st.dictionaries(_text, _json, max_size=6).map(msgspec.json.encode),
    # the same with spaces around colons and commas, as other JSON writers put them
    st.dictionaries(_ascii, _json, max_size=6).map(lambda d: json.dumps(d).encode()),
    st.dictionaries(_ascii, _json, max_size=6).map(
        lambda d: json.dumps(d, indent=1, separators=(" , ", " : ")).encode()),
)


@settings(max_examples=600, deadline=None)
@given(lines=st.lists(_line, min_size=1, max_size=5))
def test_c_writes_the_python_bytes_or_hands_the_line_back(lines: list[bytes]) -> None:
    """Any event line (escapes, text outside ASCII, floats, big integers, nesting, spaced
    JSON): the C vector is the Python one byte for byte, or None; a line of ASCII without
    an escape, a fraction or a word over 2,030 letters is always answered; str and bytes
    give the same."""
    got = _tsvector_c.vectors(lines)
    assert got == _tsvector_c.vectors([x.decode() for x in lines])
    for line, vector in zip(lines, got, strict=True):
        plain = line.isascii() and b"\\" not in line and not any(
            isinstance(v, float) for v in _leaves(msgspec.json.decode(line))
        ) and b"q" * 2031 not in line.lower()
        if vector is None:
            assert not plain, line
        else:
            assert vector == _python(line)


@settings(max_examples=600, deadline=None)
@given(lines=st.lists(_line, min_size=1, max_size=5))
def test_c_texts_are_the_python_text_or_hand_the_line_back(lines: list[bytes]) -> None:
    """The SQLite store's keyword text: C gives line_text's exact string, or None where
    that takes its reference path (an escape, a fraction or an exponent); a line without
    an escape or a float (whatever its characters) is always answered."""
    got = _tsvector_c.texts(lines)
    for line, text in zip(lines, got, strict=True):
        plain = b"\\" not in line and not any(
            isinstance(v, float) for v in _leaves(msgspec.json.decode(line)))
        if text is None:
            assert not plain, line
        else:
            assert text == line_text(line)


def test_batch_texts_take_the_c_texts_or_compute_them(monkeypatch) -> None:
    """line_texts gives every line the same keyword text with the extension and without it
    (lines it hands back included); an access record's row gets none."""
    at = '"occurred_at":"2026-01-02T03:04:05.678Z"'
    lines = [f'{{"id":"a",{at},"action":"user.invited","actor":{{"email":"A@x.test"}},"n":12}}',
             f'{{"id":"b",{at},"action":"user.invited","note":"tab\\there","n":1.5}}',
             f'{{"id":"c",{at},"action":"audit_log.viewed","actor":{{"email":"b@x.test"}}}}',
             f'{{"id":"d",{at},"action":"x","note":"caf\u00e9 \u00fcber"}}']
    lines = [x.encode() for x in lines]
    with_c = line_texts(lines)
    monkeypatch.setenv("AUDITSHIPD_TSVECTOR_C", "0")
    without = line_texts(lines)
    assert with_c == without == [line_text(line) for line in lines]
    assert event_row(lines[2]).text == ""
    assert "12" in with_c[0] and "tab" in with_c[1] and "über" in with_c[3]


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


@pytest.mark.parametrize("line", [
    b'{"id":"e1","note":"' + b" ".join([b"user"] * 300 + [b"admin"] * 3) + b'"}',
    b'{"n":"' + b" ".join(b"w%d" % (i % 50) for i in range(17000)) + b'"}',
    b'{"n":"' + b"X" * 300 + b'","m":[' + b"9" * 400 + b"]}",
    b'{"a" :"k" , "b":  {"c":"v"},"d":[1,-2,true,null,"e:f"]}',
    b"{}",
    b'{"a":""}',
    # lexemes alike in their first 8 bytes (the sort's and the merge's quick compare)
    b'{"a":"abcdefghij abcdefgh abcdefghik abcdefghij abcdefgh0 abcdefg abcdefghij"}',
    b'{"a":"' + b"Y" * 2030 + b" " + b"y" * 2029 + b'z"}',  # the longest words kept whole
])
def test_c_limits_match_python(line: bytes) -> None:
    """The limits the server keeps (256 positions a lexeme, positions up to 16383), words
    up to 2,030 bytes whole, negative numbers, keys and literals left out, lexemes that
    differ only after their 8th byte: the Python bytes."""
    [vector] = _tsvector_c.vectors([line])
    assert vector == _python(line)


@pytest.mark.parametrize("line", [
    b'{"a":"caf\\u00e9"}', '{"a":"café"}'.encode(), b'{"a":1.5}', b'{"a":1e5}', b'{"a":"x',
    '{"é":"plain"}'.encode(), b'{"a":"short ' + b"k" * 2031 + b'"}',
])
def test_lines_handed_back_to_python(line: bytes) -> None:
    """An escape, text outside ASCII (even in a key), a fraction, an exponent, a string left
    open, a word of more than 2,030 bytes (its lexeme ends with a hash): no answer from C."""
    assert _tsvector_c.vectors([line]) == [None]
    assert _tsvector_c.vectors([line.decode()]) == [None]


def test_lexemes_in_the_servers_order() -> None:
    """The vector lists its lexemes in byte order, a prefix before what it starts, so the
    server stores it without sorting."""
    vector = search_vector("zeta alpha al 10 9 Alpha b")
    (count,) = struct.unpack(">i", vector[:4])
    lexemes, rest = [], vector[4:]
    for _ in range(count):
        lexeme, rest = rest.split(b"\x00", 1)
        npos = int.from_bytes(rest[:2], "big")
        rest = rest[2 + 2 * npos:]
        lexemes.append(lexeme)
    assert lexemes == [b"10", b"9", b"al", b"alpha", b"b", b"zeta"] and rest == b""


def test_batch_vectors_with_and_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """row_vectors of a batch (lines C answers, lines it hands back, an access record with
    an empty vector) is the same with the extension, switched off, and not built."""
    lines = [
        b'{"id":"a1","action":"user.login","actor":{"email":"Ann@x.example"},"n":42}',
        '{"id":"a2","action":"user.login","note":"café"}'.encode(),
        b'{"id":"a3","action":"audit_log.viewed","note":"secret words"}',
        b'{"id":"a4","action":"x","size":1.25}',
    ]
    rows = [event_row(line, text=False) for line in lines]
    assert {r.text for r in rows} == {""}
    with_c = pg_vectors.row_vectors(rows)
    full = [event_row(line) for line in lines]
    assert with_c == [pg_vectors.EMPTY_VECTOR if r.action in ACCESS_ACTIONS
                      else search_vector(r.text) for r in full]
    assert with_c[2] == pg_vectors.EMPTY_VECTOR != with_c[0]
    monkeypatch.setenv("AUDITSHIPD_TSVECTOR_C", "0")
    assert pg_vectors.tsvector_c() is None
    assert pg_vectors.row_vectors(rows) == with_c
    monkeypatch.delenv("AUDITSHIPD_TSVECTOR_C")
    monkeypatch.setattr(pg_vectors, "_built_c", None)
    assert pg_vectors.row_vectors(rows) == with_c


def test_wrong_arguments_are_errors() -> None:
    """Not a list, or an item neither str nor bytes: TypeError, nothing written."""
    with pytest.raises(TypeError):
        _tsvector_c.vectors((b"{}",))
    with pytest.raises(TypeError):
        _tsvector_c.vectors([b"{}", 1])
    with pytest.raises(TypeError):
        _tsvector_c.texts((b"{}",))
    with pytest.raises(TypeError):
        _tsvector_c.texts([b"{}", "{}"])  # texts() takes the stored bytes only


def test_no_memory_or_reference_leak_over_many_calls() -> None:
    """A debug loop over vectors() and texts() (answered lines, handed back ones, a type
    error): after thousands of rounds no memory is left allocated and no reference on the
    input lines."""

    from c_leaks import assert_no_leak

    lines: list[object] = [b'{"id":"%d","note":"%s"}' % (i, b"w " * i) for i in range(40)]
    lines += [b"%s" % x for x in (b'{"a":1.5}', b'{"a":"\\n"}', b"{}")]
    lines += [f'{{"id":"s{i}"}}' for i in range(3)] + ['{"a":"é"}' + " " * 0]

    stored = [x for x in lines if isinstance(x, bytes)]

    def run() -> None:
        _tsvector_c.vectors(lines)
        with pytest.raises(TypeError):
            _tsvector_c.vectors([*lines, 1])
        _tsvector_c.texts(stored)
        with pytest.raises(TypeError):
            _tsvector_c.texts([*stored, 1])

    assert_no_leak(run, lines)
