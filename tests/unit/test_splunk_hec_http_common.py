"""The HTTP helpers shared by splunk_hec, datadog and http (sinks/_http_common.py)."""

from __future__ import annotations

import email.utils

import pytest

from auditshipd.errors import PermanentError, RetryableError
from auditshipd.sinks._http_common import (
    classify_status,
    make_session,
    parse_rate_limit_reset,
    parse_retry_after,
    retry_hint,
    safe_url,
    scrub,
    scrub_error,
    snippet,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value, expected):
    """Retry-After as delta-seconds or HTTP date; garbage and absence give None."""
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_rate_limit_reset_seconds_or_epoch():
    """X-RateLimit-Reset: small values are seconds, large ones an epoch timestamp."""
    assert parse_rate_limit_reset("12", now=NOW) == 12.0
    assert parse_rate_limit_reset(str(int(NOW + 40)), now=NOW) == 40.0
    assert parse_rate_limit_reset("x", now=NOW) is None
    assert parse_rate_limit_reset(None) is None


def test_retry_hint_prefers_retry_after_case_insensitively():
    """Retry-After wins over X-RateLimit-Reset; header names match in any case."""
    assert retry_hint({"retry-after": "3", "X-RateLimit-Reset": "9"}) == 3.0
    assert retry_hint({"x-ratelimit-reset": "9"}) == 9.0
    assert retry_hint({}) is None


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_classify_2xx_is_delivered(status):
    """Any 2xx: None, the request was accepted."""
    assert classify_status(status, {}) is None


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_classify_retryable_statuses(status):
    """408/425/429 and 5xx (but 501/505) are retryable, with the hint."""
    err = classify_status(status, {"Retry-After": "5"}, "busy", receiver="R")
    assert isinstance(err, RetryableError)
    assert err.retry_after == 5.0
    assert f"R answered HTTP {status}" in str(err) and "busy" in str(err)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501, 505])
def test_classify_permanent_statuses(status):
    """Other 4xx and 501/505 are permanent for the whole batch."""
    err = classify_status(status, {}, "")
    assert isinstance(err, PermanentError)
    assert err.rejected is None and err.accepted == 0


def test_classify_redirect_names_location_without_secrets():
    """A 3xx is permanent, names the target without user info or query."""
    err = classify_status(301, {"Location": "https://u:pw@new.example.com/x?key=s3cr3t"})
    assert isinstance(err, PermanentError)
    assert "https://new.example.com/x" in str(err)
    assert "s3cr3t" not in str(err) and "pw" not in str(err)


def test_scrub_and_snippet():
    """Secrets are masked; snippets are one line and bounded."""
    assert scrub("token abcd1234 echoed", ["abcd1234", None, ""]) == "token *** echoed"
    assert snippet(b"a\n  b\tc") == "a b c"
    assert snippet("x" * 500, limit=10) == "x" * 10 + "..."


def test_safe_url_strips_credentials_and_query():
    """safe_url keeps scheme, host, port and path only."""
    assert safe_url("https://user:pw@h.example:8088/p?api_key=1#f") == "https://h.example:8088/p"


async def test_make_session_verifies_tls_by_default(tmp_path):
    """TLS verification is on unless turned off; the timeout is the session's total."""
    session = make_session(timeout=3.0)
    try:
        assert session.connector._ssl is not False  # no public accessor
        assert session.timeout.total == 3.0
    finally:
        await session.close()
    session = make_session(tls_verify=False)
    try:
        assert session.connector._ssl is False
    finally:
        await session.close()


def test_scrub_error_masks_in_place():
    """scrub_error masks secrets in an error's message and keeps its values."""
    err = RetryableError("failed for https://x/?key=abcd1234", retry_after=2.0, accepted=3)
    assert scrub_error(err, ["abcd1234"]) is err
    assert str(err) == "failed for https://x/?key=***"
    assert (err.retry_after, err.accepted) == (2.0, 3)
