"""The stream form of the page, derived from the sink type's option schema: one input per
option (so the page offers exactly the keys the API and the TOML sinks take), and the
submitted form turned back into options.

Text inputs carry strings; each is converted to its option's type here (``"30"`` to a
number, ``true``/``false`` to a boolean, ``Name: value`` lines to a header table), and
the sink type's schema then checks the result like any other request. A secret option is
a password input that is never filled in: left empty, the stored secret stays. A stored
URL is shown with its credentials and query values masked, as the API shows it; sent
back unchanged, the stored URL stays.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

import msgspec

from ..plugin import SinkType
from .stream_defs import HOST_OPTIONS, StreamRequestError, shown_option

__all__ = ["FormField", "form_fields", "options_from_form"]


@dataclass(frozen=True)
class FormField:
    """One option as an input: ``kind`` is text, number, bool, choice, headers or secret."""

    name: str
    kind: str
    required: bool
    default: str
    value: str
    choices: tuple[str, ...] = ()
    is_set: bool = False


def _kind(tp: Any, secret: bool) -> tuple[str, tuple[str, ...]]:
    plain = typing.get_origin(tp) in (dict, typing.Literal)
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    first = tp if plain else args[0]
    if typing.get_origin(first) is dict:
        return "headers", ()
    if secret:
        return "secret", ()
    if typing.get_origin(first) is typing.Literal:
        return "choice", tuple(str(a) for a in typing.get_args(first))
    if first is bool:
        return "bool", ()
    if first in (int, float):
        return "number", ()
    return "text", ()


def _shown(value: Any, kind: str) -> str:
    if value is None or value is msgspec.NODEFAULT:
        return ""
    if isinstance(value, str):  # a submitted form shown again: as it was typed
        return value
    if kind == "headers" and isinstance(value, dict):
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    if kind == "bool":
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def form_fields(sink_type: SinkType, options: dict[str, Any] | None = None,
                secret_names: list[str] | tuple[str, ...] = (), *,
                stored: bool = False) -> list[FormField]:
    """The inputs of a stream of ``sink_type``, filled in with ``options`` (secrets never;
    ``stored`` options, not a form sent back, with URL credentials masked)."""
    options = options or {}
    out = []
    for f in msgspec.structs.fields(sink_type.options):
        if f.name in HOST_OPTIONS:
            continue
        secret = f.name in sink_type.secrets
        kind, choices = _kind(f.type, secret)
        is_set = f.name in secret_names
        value = options.get(f.name)
        value = "" if secret else _shown(shown_option(value) if stored else value, kind)
        default = "" if f.default is msgspec.NODEFAULT else _shown(f.default, kind)
        out.append(FormField(f.name, kind, f.required, default, value, choices, is_set))
    return out


def _headers(text: str, name: str) -> dict[str, str]:
    table = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise StreamRequestError(f"line {number}: write one header per line as"
                                     " 'Name: value'", param=f"options.{name}")
        table[key.strip()] = value.strip()
    return table


def options_from_form(sink_type: SinkType, form: Any, *, editing: bool,
                      stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """The options a submitted form asks for. Creating: the filled-in inputs. Editing:
    an emptied input removes its option (``None``), an empty secret keeps the stored one,
    and so does an input sent back as the form showed the ``stored`` value (masked, or a
    list written out as text)."""
    out: dict[str, Any] = {}
    stored = stored or {}
    for f in msgspec.structs.fields(sink_type.options):
        if f.name in HOST_OPTIONS or f.name not in form:
            continue
        raw = str(form.get(f.name, "")).strip()
        secret = f.name in sink_type.secrets
        kind, _ = _kind(f.type, secret)
        before = stored.get(f.name)
        if editing and before is not None and raw == _shown(shown_option(before), kind):
            continue  # as the form showed it (masked, a list as text): the stored one stays
        if not raw:
            if editing and not secret:
                out[f.name] = None
            continue
        if kind == "headers":
            out[f.name] = _headers(raw, f.name)
        elif kind in ("bool", "number"):
            try:
                out[f.name] = msgspec.convert(raw, type=f.type, strict=False)
            except msgspec.ValidationError:
                want = "true or false" if kind == "bool" else "a number"
                raise StreamRequestError(f"must be {want}", param=f"options.{f.name}") from None
        else:
            out[f.name] = raw
    return out
