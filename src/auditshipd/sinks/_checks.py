"""Option checks shared by the sinks' ``validate`` functions; each raises
:class:`~auditshipd.errors.ConfigError` naming the key (never echoing a secret value).

* :func:`http_url` -- an ``http(s)`` URL parsed with yarl, its host readable.
* :func:`split_url` -- :func:`urllib.parse.urlsplit` of a URL whose host and port parse.
* :func:`positive_floats` -- every float option finite and above zero.
* :func:`header_fields` / :func:`header_text` -- header names and values that cannot
  split or end a header line.
* :func:`readable_file` -- a file option that names an existing file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

import msgspec
from yarl import URL

from ..plugin import ConfigError

__all__ = ["header_fields", "header_text", "http_url", "positive_floats", "readable_file",
           "split_url"]

# RFC 9110 token: the characters of a header name.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A header value may hold tabs, never another control character (CR, LF, NUL...).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def http_url(value: str, key: str = "url") -> tuple[URL, str]:
    """``value`` parsed by yarl and its host (``""`` when it has none). A URL yarl cannot
    parse, or whose host is a malformed IDNA name (``http://xn--/``), is a ConfigError."""
    try:
        url = URL(value)
        host = url.host or ""
    except (ValueError, TypeError):  # UnicodeError is a ValueError
        raise ConfigError("not a valid URL", key=key) from None
    return url, host


def split_url(value: str, key: str = "url") -> SplitResult:
    """``urlsplit(value)``, its hostname and port checked to parse: a bad IPv6 literal
    (``mqtt://[fd00::10:1883``) or a port out of range is a ConfigError."""
    try:
        parts = urlsplit(value)
        _ = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(f"not a valid URL ({exc})", key=key) from None
    return parts


def positive_floats(options: Any) -> None:
    """Every float option (timeouts, intervals) is a finite number above zero: NaN
    compares false with everything, and an infinite timeout never ends."""
    for field in msgspec.structs.fields(options):
        value = getattr(options, field.name)
        if field.type not in (float, float | None) or value is None:
            continue
        if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
            raise ConfigError("must be a positive number of seconds", key=field.name)


def header_text(value: str | None, key: str) -> None:
    """``value`` (a token, a header value) without CR, LF or other control characters:
    they would end the header line or be refused when the request is built."""
    if value is not None and _CONTROL.search(value):
        raise ConfigError("must not contain control characters (CR, LF, NUL...)", key=key)


def header_fields(headers: Mapping[str, str], key: str = "headers") -> None:
    """Header names are HTTP tokens; values hold no control characters."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ConfigError(f"{name!r} is not a valid header name", key=key)
        if _CONTROL.search(value):
            raise ConfigError(f"the value of {name!r} must not contain control characters"
                              " (CR, LF, NUL...)", key=key)


def readable_file(path: str | None, key: str) -> None:
    """``path``, when set, names an existing file this process can read."""
    if path is None:
        return
    if not os.path.isfile(path):
        raise ConfigError(f"file {path!r} not found", key=key)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {path!r}: {exc.strerror}", key=key) from None
