"""Masking credentials in error text before it is stored, logged or shown.

Sinks already remove their own configured secrets from their errors; this is the
pattern-based net under them (URL user:password and query values, bearer/Splunk/token
schemes, ``secret=value`` pairs, AWS access key ids), applied by the core to every error a
sink reports (logs, status files, dead letters) and by the portal before display.

A URL's query values are secrets whatever their names: receivers authenticate with
``?code=``, ``?sig=``, ``?k=``..., and some echo the URL they were called with in their
error bodies; so are path segments that look like tokens (HTTP sources, webhooks).
:func:`url_secrets` gives the literal values of a configured URL, so a sink can also mask
them where they appear without their key (``{"code": "..."}``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import msgspec

__all__ = ["path_token", "scrub_secrets", "sink_secrets", "url_secrets"]

MASK = "***"
# Literal values shorter than this are not masked: masking "1" or "on" everywhere would
# garble the message and protect nothing.
MIN_SECRET_CHARS = 4
# A URL path segment at least this long, of letters and digits, is taken as a token.
_PATH_TOKEN_CHARS = 16

# A query string: "?" right after a non-blank (a path or host), holding at least one
# key=value pair, up to a blank, a quote, an angle bracket or a fragment.
_QUERY = re.compile(r"(?<=[^\s?=&])\?([^\s\"'<>#?]*=[^\s\"'<>#]*)")

_SECRET_PATTERNS = (
    # user:password@ (or user@) in a URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@"), r"\1***@"),
    # An Authorization header's credential, whatever it looks like
    (re.compile(r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)([a-z][a-z0-9-]*\s+)?"
                r"[^\s,;\"'}]+"), r"\1\2***"),
    # Authorization schemes followed by a credential (not by a plain word of the
    # sentence: "Splunk HEC", "the token is missing")
    (re.compile(r"(?i)\b(bearer|basic|splunk|token|dd-api-key)(\s*[:=]?\s+)([^\s,;\"']+)"),
     lambda m: m.group(1) + m.group(2) + _credential_masked(m.group(3), m.group(2))),
    # key=value / "key": "value" where the key names a secret; "sig" only as the whole
    # key or its last part ("sig=", "x-sig:"), not as the start of a word ("SIGTERM: ");
    # an exception's name is no key ("InvalidAuthorizationSpecificationError: role ...")
    (re.compile(
        r"(?i)([\"']?(?:[a-z0-9_-]*(?:token|secret|password|passwd|api[_-]?key|access[_-]?key|"
        r"signature|auth|credential)[a-z0-9_-]*(?<!error)(?<!exception)"
        r"|(?<![a-z0-9_-])(?:[a-z0-9]+[_-])*sig)"
        r"[\"']?\s*[:=]\s*[\"']?)[^\s&,;\"'}]+"),
     r"\1***"),
    # AWS access key ids
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "***"),
)


# Punctuation that ends a sentence or a bracket rather than belonging to a word.
_TRAILING = ".:!?)]}>"
# Words of a sentence that follow "Splunk", "Bearer", "Basic" or "token" in error texts
# ("Splunk HEC answered", "the token is missing", "Basic auth required"): kept. Any other
# word there may be a credential a receiver echoed back: masked.
_PLAIN_WORDS = frozenset({
    "a", "an", "and", "answered", "are", "auth", "authentication", "authorization", "be",
    "been", "by", "can", "cannot", "cloud", "could", "credentials", "did", "does",
    "enterprise", "expired", "for", "format", "from", "given", "has", "have", "hec",
    "header", "in", "invalid", "is", "it", "its", "key", "may", "missing", "must", "not",
    "of", "or", "provided", "received", "rejected", "request", "required", "revoked",
    "scheme", "server", "should", "that", "the", "this", "to", "token", "tokens",
    "unknown", "url", "value", "was", "were", "will", "with", "you", "your",
})


def _credential_masked(word: str, separator: str) -> str:
    """``word`` masked unless it is a plain word of the sentence (``_PLAIN_WORDS``) and
    not assigned (``token: x``, ``token=x`` are always masked); trailing sentence
    punctuation stays."""
    core = word.rstrip(_TRAILING)
    tail = word[len(core):]
    if not core or core == MASK:
        return word
    if ":" not in separator and "=" not in separator and core.lower() in _PLAIN_WORDS:
        return word
    return MASK + tail


def _mask_query(m: re.Match[str]) -> str:
    parts = []
    for part in re.split(r"([&;])", m.group(1)):
        key, sep, value = part.partition("=")
        parts.append(f"{key}={MASK}" if sep and value else part)
    return "?" + "".join(parts)


def scrub_secrets(message: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """``message`` with URL credentials and query values, bearer tokens, ``secret=value``
    pairs and the literal ``secrets`` given (e.g. :func:`url_secrets` of a sink's URL)
    masked."""
    if not message:
        return message
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS},
                         key=len, reverse=True):  # longest first: no half-masked values
        message = message.replace(secret, MASK)
    message = _QUERY.sub(_mask_query, message)
    for pattern, replacement in _SECRET_PATTERNS:
        message = pattern.sub(replacement, message)
    return message


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of ``url``: its user, password and query values, and the path
    segments that look like a credential (:func:`path_token`), both as written and
    percent-decoded (a receiver may echo either)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        raw = [parts.username, parts.password]
    except ValueError:
        return []
    raw += [seg for seg in parts.path.split("/") if path_token(unquote(seg))]
    for pair in re.split(r"[&;]", parts.query):
        raw.append(pair.partition("=")[2] if "=" in pair else pair)
    values = [v for v in raw if v]
    decoded = [unquote(v) for v in values]
    decoded += [v for _k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return [v for v in dict.fromkeys(values + decoded) if len(v) >= MIN_SECRET_CHARS]


def path_token(segment: str) -> bool:
    """Whether a URL path segment looks like a credential: HTTP-source and webhook
    receivers put their token in the path (``/receiver/v1/http/<token>``,
    ``/services/T0/B0/<token>``), where no query rule finds it. At least 16 characters
    with both letters and digits: a path's words (``collector``, ``event``), versions
    (``v2``), dates and numeric ids stay readable."""
    return (len(segment) >= _PATH_TOKEN_CHARS and any(c.isdigit() for c in segment)
            and any(c.isalpha() for c in segment))


def sink_secrets(sink_config: Any) -> list[str]:
    """The literal secrets of a configured sink, for :func:`scrub_secrets`: the values of
    the options its type names in ``secrets``, and the secret parts (:func:`url_secrets`) of
    every URL among its options (a drop-in sink's included)."""
    options = getattr(sink_config, "options", None)
    sink_type = getattr(sink_config, "sink_type", None)
    named = set(getattr(sink_type, "secrets", ()) or ())
    try:
        tree = msgspec.to_builtins(options)
    except (TypeError, msgspec.EncodeError):
        return []
    found: list[str] = []
    _collect(tree, named, False, found)
    return list(dict.fromkeys(found))


def _collect(value: Any, named: set[str], secret: bool, found: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _collect(item, named, secret or key in named, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, named, secret, found)
    elif isinstance(value, str):
        if secret and len(value) >= MIN_SECRET_CHARS:
            found.append(value)
        if "://" in value:
            found.extend(url_secrets(value))
