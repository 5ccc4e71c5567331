"""Object names of the object-store sinks (s3, gcs, azure_blob) from ``key_template``.

A key is rendered from the date of the batch's first event (``occurred_at``, UTC), its
first and last event ids and ``{digest}``, a short SHA-256 of the object's body (the
bytes written, before gzip). The same batch sent again after a crash gets the same name
(and the same bytes); a batch that differs in any way, even one with the same first and
last ids (redelivered after a scope or redaction change) or ids whose '-' make
``{first_id}-{last_id}`` ambiguous, gets another name and never replaces an object that
holds other events. A name with ``{digest}`` is therefore written once: the sinks upload
it create-only and take "already exists" as delivered. A template without ``{digest}``
names a batch by its ids alone and overwrites.
"""

from __future__ import annotations

import functools
import hashlib
import string
from datetime import datetime
from typing import Any
from urllib.parse import quote

from ..integrity.digest import digest_object_key
from ..plugin import Batch, ConfigError
from ..timestamps import parse_rfc3339, parse_rfc3339_ns

__all__ = [
    "DEFAULT_KEY_TEMPLATE",
    "FORMAT_KEY_TEMPLATES",
    "KEY_PLACEHOLDERS",
    "check_key_template",
    "content_digest",
    "key_part",
    "names_by_content",
    "object_key",
    "object_name",
    "occurred_at",
    "occurred_at_ns",
    "template_for",
]

DEFAULT_KEY_TEMPLATE = "audit/{yyyy}/{mm}/{dd}/{hh}/{first_id}-{last_id}-{digest}.jsonl.gz"
# Quoted ids longer than this are shortened (see key_part).
_LONG_PART = 200
# The default before {digest}: a configuration that spells it out keeps its names.
_FORMER_DEFAULT = "audit/{yyyy}/{mm}/{dd}/{hh}/{first_id}-{last_id}.jsonl.gz"
_FORMER_FORMAT_TEMPLATES = {
    "ocsf": "audit/{yyyy}/{mm}/{dd}/{hh}/{first_id}-{last_id}.ocsf.jsonl.gz",
    "ecs": "audit/{yyyy}/{mm}/{dd}/{hh}/{first_id}-{last_id}.ecs.jsonl.gz",
    "cef": "audit/{yyyy}/{mm}/{dd}/{hh}/{first_id}-{last_id}.cef.log.gz",
}
# Hex digits of the body's SHA-256 in {digest}: 64 bits, beside the ids and the hour.
_DIGEST_HEX = 16
KEY_PLACEHOLDERS = frozenset(
    {"yyyy", "mm", "dd", "hh", "first_id", "last_id", "digest", "sink", "format"})
# With a format (and no key_template of the operator's), objects are named with it.
FORMAT_KEY_TEMPLATES = {
    "ocsf": "audit/{yyyy}/{mm}/{dd}/{hh}/{first_id}-{last_id}-{digest}.ocsf.jsonl.gz",
    "ecs": "audit/{yyyy}/{mm}/{dd}/{hh}/{first_id}-{last_id}-{digest}.ecs.jsonl.gz",
    "cef": "audit/{yyyy}/{mm}/{dd}/{hh}/{first_id}-{last_id}-{digest}.cef.log.gz",
}


def check_key_template(template: str) -> None:
    """Raise ConfigError (key ``key_template``) unless ``template`` names each batch uniquely."""
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template)]
    except ValueError as exc:
        raise ConfigError(f"invalid template: {exc}", key="key_template") from None
    fields = [f for f, _, _ in parsed if f is not None]
    specs = [f for f, spec, conv in parsed if f is not None and (spec or conv)]
    unknown = sorted({f for f in fields if f not in KEY_PLACEHOLDERS})
    if unknown:
        names = ", ".join("{" + f + "}" for f in unknown)
        known = ", ".join("{" + p + "}" for p in sorted(KEY_PLACEHOLDERS))
        raise ConfigError(f"unknown placeholder {names} (known: {known})", key="key_template")
    if specs:
        raise ConfigError("placeholders take no format spec or conversion", key="key_template")
    if "digest" not in fields and not {"first_id", "last_id"} <= set(fields):
        # Without the digest nor both ids two different batches would overwrite each other.
        raise ConfigError("must contain {digest} (recommended) or both {first_id} and"
                          " {last_id}", key="key_template")
    if template.startswith("/"):
        raise ConfigError("must not start with '/'", key="key_template")


def key_part(value: str) -> str:
    """``value`` (an event id) as it goes into object names and metadata: printable and
    free of '/', without collisions. An id longer than 200 characters once quoted keeps
    its first 64 and the SHA-256 of the whole id behind ``%sha256-`` (never the output of
    quoting): object names must stay within 1,024 bytes (S3, GCS, Azure) and S3's
    metadata within 2 KB, which two long ids would exceed (the store then refuses the
    whole batch)."""
    part = quote(value, safe="-_.~") or "unknown"
    if len(part) <= _LONG_PART:
        return part
    head = part[:64]
    cut = head.find("%", len(head) - 2)  # do not end inside a %XX escape
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{head[:cut] if cut >= 0 else head}%sha256-{digest}"


def template_for(template: str, fmt: str) -> str:
    """The template to use: the default one names objects with the sink's format (and so
    does the former default, without {digest}, where a configuration spells it out)."""
    if template == DEFAULT_KEY_TEMPLATE:
        return FORMAT_KEY_TEMPLATES.get(fmt, template)
    if template == _FORMER_DEFAULT:
        return _FORMER_FORMAT_TEMPLATES.get(fmt, template)
    return template


@functools.lru_cache(maxsize=64)
def names_by_content(template: str) -> bool:
    """Whether ``template`` names objects by their content (it holds ``{digest}``): then
    two objects of the same name hold the same bytes, and an upload may be create-only."""
    try:
        return any(f == "digest" for _, f, _, _ in string.Formatter().parse(template))
    except ValueError:
        return False


def content_digest(body: bytes) -> str:
    """``{digest}``: the first 16 hex digits of the SHA-256 of ``body``, the object's bytes
    before gzip."""
    return hashlib.sha256(body).hexdigest()[:_DIGEST_HEX]


def object_key(template: str, batch: Batch, sink: str = "", fmt: str = "native",
               body: bytes | None = None) -> str:
    """The object key of ``batch``: the same batch always gives the same key. ``body``:
    the bytes the object holds before gzip (``batch.jsonl()`` when not given), which
    ``{digest}`` names."""
    when = occurred_at(batch.events[0]) if batch.events else None
    if when is None:
        date = dict.fromkeys(("yyyy", "mm", "dd", "hh"), "unknown")
    else:
        date = {
            "yyyy": f"{when.year:04d}", "mm": f"{when.month:02d}",
            "dd": f"{when.day:02d}", "hh": f"{when.hour:02d}",
        }
    digest = ""
    if names_by_content(template):
        digest = content_digest(batch.jsonl() if body is None else body)
    return template.format(
        **date, first_id=key_part(batch.first_id), last_id=key_part(batch.last_id),
        digest=digest, sink=key_part(sink), format=key_part(fmt),
    )


def occurred_at(event: dict[str, Any]) -> datetime | None:
    """The event's ``occurred_at`` (RFC 3339) as an aware UTC datetime, or None."""
    value = event.get("occurred_at")
    return parse_rfc3339(value) if _is_event_time(value) else None


def occurred_at_ns(event: dict[str, Any]) -> int | None:
    """The event's ``occurred_at`` in nanoseconds since the Unix epoch, or None."""
    value = event.get("occurred_at")
    return parse_rfc3339_ns(value) if _is_event_time(value) else None


def _is_event_time(value: Any) -> bool:
    # A date alone is not an event time here (the caller falls back to another time).
    return isinstance(value, str) and len(value.strip()) > 10


def object_name(template: str, batch: Batch, sink: str, fmt: str, body: bytes, *,
                gzip: bool = True) -> tuple[str, bool]:
    """The name of ``batch``'s object (``body``: its bytes before gzip) and whether it may
    be written create-only: an integrity digest record is an object of its own under
    ``digests/``; a name from a template with ``{digest}`` holds equal bytes wherever it is
    equal, so "already exists" means delivered (without it an upload overwrites)."""
    name = digest_object_key(batch, gzip=gzip)
    if name is not None:
        return name, False
    return object_key(template, batch, sink, fmt, body), names_by_content(template)
