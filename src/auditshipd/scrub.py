"""Masking credentials in error text before it is stored, logged or shown.

Sinks already remove their own configured secrets from their errors; this is the
pattern-based net under them (URL user:password, bearer/Splunk/token schemes,
``secret=value`` pairs, AWS access key ids), applied by the core to every error a sink
reports (logs, status files, dead letters) and by the portal before display.
"""

from __future__ import annotations

import re

__all__ = ["scrub_secrets"]

_SECRET_PATTERNS = (
    # user:password@ in a URL
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@"), r"\1***@"),
    # Authorization schemes followed by a credential
    (re.compile(r"(?i)\b(bearer|basic|splunk|token|dd-api-key)(\s*[:=]?\s+)[^\s,;\"']+"), r"\1\2***"),
    # key=value / "key": "value" where the key names a secret
    (re.compile(
        r"(?i)([\"']?[a-z0-9_-]*(?:token|secret|password|passwd|api[_-]?key|access[_-]?key|"
        r"signature|sig|auth|credential)[a-z0-9_-]*[\"']?\s*[:=]\s*[\"']?)[^\s&,;\"'}]+"),
     r"\1***"),
    # AWS access key ids
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "***"),
)


def scrub_secrets(message: str | None) -> str | None:
    """``message`` with URL credentials, bearer tokens and ``secret=value`` pairs masked."""
    if not message:
        return message
    for pattern, replacement in _SECRET_PATTERNS:
        message = pattern.sub(replacement, message)
    return message
