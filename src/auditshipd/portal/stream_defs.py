"""Self-service stream definitions: what an organization's admin asks for, checked with the
same schema as a ``[[sinks]]`` table, its secrets split off, and what the API shows.

A definition is a sink of type ``http``, ``splunk_hec``, ``datadog`` or ``s3`` with that
type's options, scoped to one organization, always: the scope comes from the token, never
from the request (an ``organizations`` key is refused). Its sink is named
``<organization>.<name>``, like a stream file's. Options that would read the host's files
or use the operator's credentials (``ca_file``, ``profile``) are refused, and an ``s3``
stream brings its own access key. The option names a sink type declares as ``secrets``
(tokens, API keys, HMAC secrets, an http stream's headers) are stored encrypted and never
shown again: the API lists their names under ``secrets`` with the value ``"set"``. So is
a URL that holds credentials (``https://user:pw@...``, ``?token=...``, a token in its
path): the store keeps it encrypted, and in the clear only masked, as it is shown.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..config.sinks import SinkConfig, sink_config
from ..errors import ConfigError
from ..plugin import SinkType
from ..scrub import scrub_secrets, url_secrets

__all__ = [
    "STREAM_TYPES",
    "StreamChange",
    "StreamDefinition",
    "StreamRequestError",
    "check_definition",
    "destination_url",
    "shown_option",
    "merge_options",
    "parse_change",
    "public_view",
    "split_secrets",
]

STREAM_TYPES = ("http", "splunk_hec", "datadog", "s3")
# Options an organization may not set: they read files of the host (ca_file) or pick
# the operator's cloud credentials (profile).
HOST_OPTIONS = frozenset({"ca_file", "profile"})
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_ID_RE = re.compile(r"ls_[0-9a-f]{16}")
_TOP_KEYS = frozenset({"name", "type", "options", "paused"})


class StreamRequestError(ValueError):
    """A stream request that cannot be honoured: ``message`` says why, ``param`` names
    the key (``options.url``) when there is one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class StreamDefinition:
    """One stream as the store keeps it: plain options, and the secret ones sealed."""

    id: str
    organization: str
    name: str
    type: str
    options: dict[str, Any]
    sealed: str | None
    secret_names: list[str]
    paused: bool
    created_at: str
    updated_at: str
    created_by: str
    updated_by: str
    # Bumped by every stored change: an edit based on an older read is refused.
    version: int = 0

    @property
    def sink_name(self) -> str:
        return f"{self.organization}.{self.name}"

    @staticmethod
    def new_id() -> str:
        return "ls_" + secrets.token_hex(8)

    @staticmethod
    def is_id(text: str) -> bool:
        """Whether ``text`` has the form of :meth:`new_id`'s ids."""
        return _ID_RE.fullmatch(text) is not None


@dataclass
class StreamChange:
    """What a create or edit request asks for (None: unchanged)."""

    name: str | None = None
    type: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    paused: bool | None = None


def parse_change(body: Any, *, creating: bool) -> StreamChange:
    """The request body of ``POST`` / ``PATCH /api/streams``, checked for shape."""
    if not isinstance(body, dict):
        raise StreamRequestError("the body must be a JSON object")
    for key in body:
        if key in ("organization", "organizations"):
            raise StreamRequestError("a stream is always scoped to your organization: it"
                                     " cannot be set", param=key)
        if key not in _TOP_KEYS:
            raise StreamRequestError(f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})",
                                     param=key)
    change = StreamChange()
    name, kind, options, paused = (body.get(k) for k in ("name", "type", "options", "paused"))
    if not creating and name is not None:
        raise StreamRequestError("the name of a stream cannot change (its delivery position"
                                 " belongs to it): create a new one", param="name")
    if creating:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise StreamRequestError("must be 1-40 lowercase letters, digits, '-' or '_'",
                                     param="name")
        change.name = name
    if creating:
        if kind not in STREAM_TYPES:
            raise StreamRequestError(f"must be one of {', '.join(STREAM_TYPES)}", param="type")
        change.type = kind
    elif kind is not None:
        raise StreamRequestError("the type of a stream cannot change: create a new one",
                                 param="type")
    if options is not None:
        if not isinstance(options, dict):
            raise StreamRequestError("must be an object", param="options")
        for key in options:
            if key in ("organization", "organizations"):
                raise StreamRequestError("a stream is always scoped to your organization:"
                                         " it cannot be set", param=f"options.{key}")
            if key in HOST_OPTIONS:
                raise StreamRequestError("not available to self-service streams",
                                         param=f"options.{key}")
        change.options = dict(options)
    if paused is not None:
        if not isinstance(paused, bool):
            raise StreamRequestError("must be true or false", param="paused")
        change.paused = paused
    return change


def split_secrets(sink_type: SinkType, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plain options, secret options): the options the sink type declares secret, and
    the whole value of an option whose URL holds credentials (user info, query values,
    token-like path segments), of which only the masked form stays plain: what the pages
    show and compare a form sent back with. ``{**plain, **secret}`` is what the sink gets."""
    named = set(sink_type.secrets)
    plain, hidden = {}, {}
    for key, value in options.items():
        if key in named:
            hidden[key] = value
            continue
        plain[key] = shown_option(value)
        if plain[key] != value:
            hidden[key] = value
    return plain, hidden


def merge_options(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``current`` with the keys of ``change`` set (a ``null`` value removes the key)."""
    merged = dict(current)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _param_of(exc: ConfigError) -> str | None:
    key = exc.key or ""
    # "sinks[0] (acme.siem).url" -> "options.url"
    key = re.sub(r"^sinks\[\d+\](?: \([^)]*\))?\.?", "", key)
    if not key or key == "type":
        return "type" if key == "type" else None
    return key if key in ("name",) else f"options.{key}"


def check_definition(organization: str, name: str, kind: str, options: dict[str, Any],
                     sink_types: dict[str, SinkType], *, since: str | None = None) -> SinkConfig:
    """The sink of a stream, validated exactly like a ``[[sinks]]`` table of a stream
    file (the sink type's own option schema and checks); StreamRequestError naming the
    first key at fault otherwise. ``since`` (RFC 3339): the sink's ``start_at``, the
    stream's creation, so every daemon ships the same events whenever it picks it up."""
    if kind not in STREAM_TYPES or kind not in sink_types:
        raise StreamRequestError(f"must be one of {', '.join(STREAM_TYPES)}", param="type")
    common = {"name", "type", "organizations", "enabled", "concurrency", "start_at",
              "redaction", "batch", "retry", "dead_letter", "format", "integrity"}
    for key in options:
        if key in common:
            raise StreamRequestError("not an option of a stream", param=f"options.{key}")
    if kind == "s3" and not (options.get("access_key_id") and options.get("secret_access_key")):
        raise StreamRequestError("an s3 stream needs access_key_id and secret_access_key (the"
                                 " operator's credentials are never used)",
                                 param="options.access_key_id")
    table = {**options, "name": f"{organization}.{name}", "type": kind,
             "organizations": [organization], **({"start_at": since} if since else {})}
    try:
        sc = sink_config(table, 0, "stream", sink_types)
    except ConfigError as exc:
        first = getattr(exc, "errors", [exc])[0]
        raise StreamRequestError(first.reason, param=_param_of(first)) from None
    sc.stream_org = organization
    return sc


def destination_url(kind: str, options: dict[str, Any]) -> str | None:
    """Where a stream of ``kind`` with ``options`` connects: the URL the SSRF check
    applies to (None: the provider's public endpoint, e.g. S3 without endpoint_url)."""
    if kind == "s3":
        return options.get("endpoint_url")
    if kind == "datadog" and not options.get("url"):
        site = str(options.get("site") or "datadoghq.com").lower()
        return f"https://http-intake.logs.{site}/api/v2/logs"
    return options.get("url")


def shown_option(value: Any) -> Any:
    """A plain option as the API and the pages show it: URL credentials, query values
    and token-like path segments masked."""
    if isinstance(value, str) and "://" in value:
        return scrub_secrets(value, url_secrets(value))
    if isinstance(value, dict):
        return {k: shown_option(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown_option(v) for v in value]
    return value


def public_view(d: StreamDefinition) -> dict[str, Any]:
    """A stream as the API and the page show it: never a secret value."""
    return {
        "id": d.id, "organization": d.organization, "name": d.name, "sink": d.sink_name,
        "type": d.type, "options": shown_option(d.options),
        "secrets": {name: "set" for name in sorted(d.secret_names)},
        "paused": d.paused, "created_at": d.created_at, "updated_at": d.updated_at,
        "created_by": d.created_by, "updated_by": d.updated_by,
    }
