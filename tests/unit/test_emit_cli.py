"""`auditshipd emit` option parsing: typed metadata, times, action names."""

from __future__ import annotations

import datetime as dt

import pytest

from auditshipd.journal.cli import UsageError, check_action, parse_metadata, parse_occurred_at


def test_metadata_strings_and_json_values():
    """KEY=VALUE is text; KEY:=JSON is a number, boolean, null, list or object."""
    got = parse_metadata(["plan=pro", "n:=1", "ok:=true", "none:=null", 'tags:=["a",2]',
                          'o:={"k":1.5}', "url=https://x.test/?a:=b", "eq=a=b"])
    assert got == {"plan": "pro", "n": 1, "ok": True, "none": None, "tags": ["a", 2],
                   "o": {"k": 1.5}, "url": "https://x.test/?a:=b", "eq": "a=b"}


@pytest.mark.parametrize("item, says", [("novalue", "KEY=VALUE"), ("=x", "key is empty"),
                                         (":=1", "key is empty"), ("n:=abc", "not JSON")])
def test_bad_metadata_names_the_problem(item, says):
    """A wrong --metadata is refused with what to write instead."""
    with pytest.raises(UsageError, match=says):
        parse_metadata([item])


def test_occurred_at_takes_rfc3339_with_a_zone_only():
    """Z and offsets are accepted (the instant, in UTC); a time without a zone or a bare
    date is refused."""
    midnight = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert parse_occurred_at("2026-01-01T00:00:00Z") == midnight
    assert parse_occurred_at("2026-01-01T02:00:00+02:00") == midnight
    assert parse_occurred_at("2026-01-01T02:00:00.123456789+0200") == midnight.replace(microsecond=123456)
    for bad, says in [("2026-01-01T00:00:00", "time zone"), ("2026-01-01", "RFC 3339"),
                      ("yesterday", "RFC 3339")]:
        with pytest.raises(UsageError, match=says):
            parse_occurred_at(bad)


def test_action_names_are_dotted_lowercase_words():
    """user.invited passes; spaces, capitals, empty parts and over-long names do not."""
    for ok in ("user.invited", "user.role_changed", "scim.sync_completed", "x", "v2.key.rotated"):
        assert check_action(ok) == ok
    for bad in ("User Invited", "user..invited", "user.", ".user", "User.invited", "", "a" * 129,
                "user.invited\n"):
        with pytest.raises(UsageError, match="e.g. user.invited"):
            check_action(bad)
