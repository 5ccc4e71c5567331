"""Secrets in URLs are secrets: one scrubber masks a URL's user, password and query
values; check-config rejects URL credentials combined with another Authorization."""

from __future__ import annotations

import io
import json
import logging

import pytest

from auditshipd.config import parse_config
from auditshipd.errors import ConfigError
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.scrub import scrub_secrets, sink_secrets, url_secrets
from auditshipd.service.logs import setup_logging
from auditshipd.sinks._http_common import scrub

TYPES = sink_types(build_plugin_manager())


@pytest.mark.parametrize(("text", "expected"), [
    ("POST https://h.example/in?code=abc123&t=7 failed",
     "POST https://h.example/in?code=***&t=*** failed"),
    ('{"request": "POST /in?code=abc123"}', '{"request": "POST /in?code=***"}'),
    ("url='http://u:p@h/x?k=v#frag'", "url='http://***@h/x?k=***#frag'"),
    ("is it down? yes, a=b", "is it down? yes, a=b"),
    ("password=pw1&user=bob", "password=***&user=bob"),
])
def test_query_values_and_userinfo_are_masked_by_pattern(text, expected):
    """Any query value of a URL (whatever its key) and any userinfo is masked."""
    assert scrub_secrets(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("second SIGTERM: exiting now", "second SIGTERM: exiting now"),
    ("SIGHUP: reloading", "SIGHUP: reloading"),
    ("design: plan b", "design: plan b"),
    ("sig: abc123", "sig: ***"),
    ('{"x-sig": "abc123"}', '{"x-sig": "***"}'),
    ("url_sig=abc123 sent", "url_sig=*** sent"),
    ("x-amz-signature: abc123", "x-amz-signature: ***"),
])
def test_sig_is_a_secret_key_only_as_a_whole_key_or_its_last_part(text, expected):
    """A key named sig (or ending in -sig, _sig) holds a secret; a word that only starts
    with or holds "sig" (a signal's name in the daemon's own messages) does not."""
    assert scrub_secrets(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ('InvalidAuthorizationSpecificationError: role "w" is not permitted to log in',
     'InvalidAuthorizationSpecificationError: role "w" is not permitted to log in'),
    ("AuthenticationException: server closed", "AuthenticationException: server closed"),
    ("auth_token: abc123", "auth_token: ***"),
    ("x-auth: abc123", "x-auth: ***"),
    ('{"client_secret": "abc123"}', '{"client_secret": "***"}'),
])
def test_an_exception_name_is_not_a_secret_key(text, expected):
    """A key naming a secret (auth, token, secret...) masks its value; an exception's
    name that holds such a word ("...AuthorizationSpecificationError: role ...", what
    PostgreSQL's login refusal reads as) is no key: the reason stays readable."""
    assert scrub_secrets(text) == expected


def test_literal_url_secrets_are_masked_without_their_key():
    """A receiver echoing only the value ({"code": "..."}) is caught by the literal list."""
    url = "https://alice:s3cr%2Ft@h.example/in?code=abc123&flag"
    assert set(url_secrets(url)) >= {"alice", "s3cr%2Ft", "s3cr/t", "abc123", "flag"}
    text = '{"code": "abc123", "who": "alice", "pw": "s3cr/t"}'
    assert scrub_secrets(text, url_secrets(url)) == '{"code": "***", "who": "***", "pw": "***"}'
    # the HTTP sinks' scrubber is the same function
    assert scrub(text, url_secrets(url)) == scrub_secrets(text, url_secrets(url))


def test_sink_secrets_cover_named_options_and_every_url():
    """A sink's literal secrets: the options its type names as secret, and the secret
    parts of every URL among its options."""
    config = parse_config("""
[[sinks]]
name = "h"
type = "http"
url = "https://h.example/in?code=abc123"
bearer_token = "tok-0001"
headers = { X-Key = "hdr-0002" }
""", "cfg.toml", TYPES)
    assert set(sink_secrets(config.sink("h"))) == {"abc123", "tok-0001", "hdr-0002"}


@pytest.mark.parametrize(("extra", "key"), [
    ('bearer_token = "tok-0001"', "bearer_token"),
    ('headers = { authorization = "Basic eHg6eXk=" }', "headers"),
])
def test_check_config_rejects_url_credentials_with_another_authorization(extra, key):
    """user:password@ in the URL plus bearer_token (or an Authorization header) can never
    work (aiohttp refuses both): a config error naming the key."""
    with pytest.raises(ConfigError) as info:
        parse_config(f"""
[[sinks]]
name = "h"
type = "http"
url = "https://u:p@h.example/in"
{extra}
""", "cfg.toml", TYPES)
    assert info.value.key == f"sinks[0] (h).{key}"
    assert "cannot be combined" in info.value.reason


def test_logs_mask_url_secrets():
    """A log line that carries a URL (from any logger) has its credentials masked."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        setup_logging("info", stream=out, timers=False)
        logging.getLogger("aiohttp.client").warning("failed: %s", "https://u:p@h/x?code=abc123")
    finally:
        for h in root.handlers:
            if h not in saved:
                h.close()
        root.handlers[:], root.level = saved, level
    [doc] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert doc["msg"] == "failed: https://***@h/x?code=***"


@pytest.mark.parametrize(("text", "expected"), [
    ("Splunk HEC answered HTTP 403 code 4 (Invalid token): the HEC token is missing",
     "Splunk HEC answered HTTP 403 code 4 (Invalid token): the HEC token is missing"),
    ("Basic auth required", "Basic auth required"),
    ("bearer token expired.", "bearer token expired."),
    ("Splunk 0b4f1c2a-1111-2222-3333-444455556666 rejected", "Splunk *** rejected"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "Bearer ***"),
    ("sent Bearer abc123.", "sent Bearer ***."),
    ("token abcdefghijklmnopqrstu", "token ***"),
    ("Basic dXNlcjpwYXNz sent", "Basic *** sent"),
    ("Authorization: Bearer abcdefg", "Authorization: *** ***"),
    ("dd-api-key 0123abcd", "dd-api-key ***"),
    # a credential of letters only, whatever its length, is masked too
    ("401 Unauthorized: Bearer hunter", "401 Unauthorized: *** ***"),
    ("rejected Bearer abcdefghijklmno", "rejected Bearer ***"),
    ("the receiver got Splunk SECRETTOKENXYZ", "the receiver got Splunk ***"),
    ("login failed with token letmein", "login failed with token ***"),
])
def test_a_scheme_word_masks_only_a_credential_after_it(text, expected):
    """After Splunk, Bearer, Basic, token: any word but a plain word of the sentence
    (and anything in an Authorization header) is masked."""
    assert scrub_secrets(text) == expected


@pytest.mark.parametrize(("url", "tokens"), [
    ("https://endpoint4.collection.sumologic.com/receiver/v1/http/ZaVnC4dhaV3kN9xQ2pLw==",
     {"ZaVnC4dhaV3kN9xQ2pLw=="}),
    ("https://hooks.example.com/services/T00000000/B00000000/XXXXXXXXXXXX1234XXXXXXXX",
     {"XXXXXXXXXXXX1234XXXXXXXX"}),
    ("https://h.example/api/webhooks/123456789012345678/abc%2Fdef0123456789xyz",
     {"abc%2Fdef0123456789xyz", "abc/def0123456789xyz"}),
    ("https://splunk.example:8088/services/collector/event/1.0", set()),
    ("https://h.example/api/v2/logs/2026-01-01/organizations/acme-corporation", set()),
])
def test_token_like_path_segments_are_url_secrets(url, tokens):
    """HTTP-source and webhook URLs carry their token in the path: a segment of 16
    characters or more with letters and digits is a secret (as written and decoded);
    a path's words, versions, dates and numeric ids are not."""
    from auditshipd.portal.stream_defs import shown_option

    assert set(url_secrets(url)) == tokens
    shown = shown_option(url)
    for token in tokens:
        assert token not in shown
        assert token not in scrub_secrets(f"HTTP 404 from {url}: unknown source", url_secrets(url))
    if not tokens:
        assert shown == url
