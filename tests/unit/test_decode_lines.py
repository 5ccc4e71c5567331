"""decode_lines: how a chunk of complete lines becomes events or quarantine entries."""

from __future__ import annotations

from auditshipd.delivery.lines import decode_lines


def ev(i: int) -> bytes:
    return b'{"id":"e%d","action":"a","occurred_at":"2024-01-01T00:00:00Z"}' % i


def offsets(raw: list[bytes], start: int = 0) -> list[int]:
    out, pos = [], start
    for x in raw:
        out.append(pos)
        pos += len(x) + 1
    return out


def run(raw: list[bytes], start: int = 1000, max_line: int = 1 << 20):
    data = b"".join(x + b"\n" for x in raw)
    return decode_lines(data, start, max_line), offsets(raw, start)


def test_good_lines_with_offsets() -> None:
    """Each good line yields (its absolute offset, the event)."""
    (good, bad), offs = run([ev(0), ev(1), ev(2)])
    assert bad == []
    assert [(o, e["id"]) for o, e in good] == list(zip(offs, ["e0", "e1", "e2"], strict=True))


def test_json_array_and_scalars_are_bad() -> None:
    """A JSON array or scalar is not an object: bad, with offset, reason and the line."""
    raw = [b"[1,2,3]", b"42", b'"text"', b"null", b"true", ev(5)]
    (good, bad), offs = run(raw)
    assert [o for o, _ in good] == [offs[5]]
    assert [(o, line) for o, _, line in bad] == list(zip(offs[:5], raw[:5], strict=True))
    for _, reason, _ in bad:
        assert reason.startswith("not a JSON object")


def test_invalid_json_is_bad() -> None:
    """Truncated or garbage JSON: bad with an 'invalid JSON' reason; the next line is read."""
    raw = [b'{"id":"e0"', b"garbage", b"{}}", ev(3)]
    (good, bad), offs = run(raw)
    assert [o for o, _ in good] == [offs[3]]
    assert [o for o, _, _ in bad] == offs[:3]
    assert all(r.startswith("invalid JSON") for _, r, _ in bad)


def test_invalid_utf8_is_bad_not_an_exception() -> None:
    """Invalid UTF-8 inside a string: a bad line with a reason, never an exception."""
    raw = [b'{"id":"e0","action":"\xff\xfe","occurred_at":"x"}', b'{"id":"\xc3"}', ev(2)]
    (good, bad), offs = run(raw)
    assert [o for o, _ in good] == [offs[2]]
    assert [o for o, _, _ in bad] == offs[:2]


def test_invalid_utf8_outside_strings_is_bad() -> None:
    """Invalid bytes outside a string are reported as invalid JSON."""
    raw = [b"\xff\xfe", ev(1)]
    (good, bad), offs = run(raw)
    assert [o for o, _ in good] == [offs[1]]
    assert [(o, r.startswith("invalid JSON")) for o, r, _ in bad] == [(offs[0], True)]


def test_empty_lines_are_skipped_but_counted_in_offsets() -> None:
    """Empty lines (and a lone \\r) are neither events nor bad, but offsets stay exact."""
    raw = [b"", ev(1), b"\r", b"   ", ev(4)]
    (good, bad), offs = run(raw)
    assert bad == []
    assert [(o, e["id"]) for o, e in good] == [(offs[1], "e1"), (offs[4], "e4")]


def test_crlf_line_endings() -> None:
    """\\r\\n endings decode (the \\r is whitespace to JSON), offsets count the \\r."""
    raw = [ev(0) + b"\r", ev(1) + b"\r", ev(2)]
    (good, bad), offs = run(raw)
    assert bad == []
    assert [(o, e["id"]) for o, e in good] == list(zip(offs, ["e0", "e1", "e2"], strict=True))


def test_schema_violations() -> None:
    """Objects without id/action/occurred_at (or not strings) are bad with a schema reason."""
    raw = [b'{"action":"a","occurred_at":"t"}', b'{"id":"","action":"a","occurred_at":"t"}',
           b'{"id":1,"action":"a","occurred_at":"t"}', b'{"id":"x","occurred_at":"t"}',
           b'{"id":"x","action":"a"}', ev(5)]
    (good, bad), offs = run(raw)
    assert [o for o, _ in good] == [offs[5]]
    assert [o for o, _, _ in bad] == offs[:5]
    assert all(r.startswith("schema:") for _, r, _ in bad)
    assert "'id'" in bad[0][1] and "'action'" in bad[3][1] and "'occurred_at'" in bad[4][1]


def test_over_max_line_bytes() -> None:
    """A line over max_line_bytes is bad with its length; the limit itself is allowed."""
    limit = len(ev(0))
    big = b'{"id":"big","action":"a","occurred_at":"t","pad":"' + b"x" * 100 + b'"}'
    raw = [ev(0), big, ev(1)]
    (good, bad), offs = run(raw, max_line=limit)
    assert [o for o, _ in good] == [offs[0], offs[2]]
    assert [(o, line) for o, _, line in bad] == [(offs[1], big)]
    assert bad[0][1] == f"line of {len(big)} bytes is over max_line_bytes ({limit})"


def test_leading_nuls_are_stripped() -> None:
    """NULs left by a copytruncate hole before a line are ignored; offsets unchanged."""
    raw = [ev(0), b"\0\0\0\0" + ev(1), b"\0\0\0"]
    (good, bad), offs = run(raw)
    assert bad == []
    assert [(o, e["id"]) for o, e in good] == [(offs[0], "e0"), (offs[1], "e1")]


def test_trailing_bytes_without_newline_are_ignored() -> None:
    """Only complete lines count: bytes after the last newline are not decoded."""
    data = ev(0) + b"\n" + ev(1)[:10]
    good, bad = decode_lines(data, 0, 1 << 20)
    assert [e["id"] for _, e in good] == ["e0"] and bad == []
