"""The fused fast path of a :class:`~auditshipd.redact.Redactor`: journal line -> shipped bytes.

``Redactor(event)`` needs the whole event decoded into Python dicts first, and walks all of
it in Python. This module compiles the same policy into msgspec Struct types that mirror
the allowlist tree (``actor.email`` -> an ``actor`` Struct with an ``email`` field), so that
decoding a line keeps only the allowed fields, in C: every other field is skipped
without being built. What is left for Python is small: the string leaves (scanned for
ids), the free-form maps (``metadata.*``: key names checked, string values scanned) and
any part of the tree a Struct cannot mirror (wildcards with explicit children, mixed
map/list nodes), which goes through the Redactor's own walk. The code that does this
per event is generated once per policy, straight-line, with no interpretation of the
plan per event.

The output is the same bytes as ``encode(redactor(decode(line)))``; three tiers keep it so:

* **strict**: leaves typed ``str | int | float | bool | None``, free-form maps typed
  ``dict[str, scalar]``. Id-named keys are handled in place (order kept).
* **loose**, when the strict decode raises ``ValidationError`` (a nested value in
  ``metadata``, a map where a leaf was expected): leaves and maps typed ``Any`` and
  walked with the Redactor's own functions.
* **slow**, when that fails too (a mistyped structure, a missing required field, not
  an object): decode to dicts and call the Redactor, for the exact result or reason.

Known difference: a JSON number out of float range (``1e400``) inside a field the policy
drops is skipped by the fast path, not decoded, so the line is shipped (without that
field) where ``msgspec.json.decode`` would reject the whole line.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from .errors import DropEvent
from .redact_policy import ABSENT

if TYPE_CHECKING:
    from .redact import Redactor

__all__ = ["FastPath", "check_event"]

_Required = Annotated[str, msgspec.Meta(min_length=1)]
_Scalar = str | int | float | bool | None
_REQUIRED = ("id", "action", "occurred_at")


class _Fallback(Exception):
    """The strict tier met something it does not rewrite in place (a renamed key)."""


def check_event(obj: Any) -> str | None:
    """The quarantine reason for a decoded line that is not a shippable event, else None."""
    if type(obj) is not dict:
        return f"not a JSON object (a JSON {type(obj).__name__})"
    for key in _REQUIRED:
        value = obj.get(key)
        if type(value) is not str or not value:
            return f"schema: {key!r} is missing or not a non-empty string"
    return None


class _Gen:
    """Builds the Struct types and the source of the per-event functions for one tier."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.names = itertools.count()
        self.env: dict[str, Any] = {}
        self.lines: list[str] = []
        self.specs: dict[type, list[tuple[str, str, Any]]] = {}

    def const(self, value: Any) -> str:
        name = f"_c{next(self.names)}"
        self.env[name] = value
        return name

    def var(self) -> str:
        return f"v{next(self.names)}"

    def struct(self, items: Any, top: bool) -> type:
        fields: list[Any] = []
        rename: dict[str, str] = {}
        specs: list[tuple[str, str, Any]] = []  # (attr, kind, sub)
        if top:
            fields += [("id", _Required), ("action", _Required), ("occurred_at", _Required),
                       ("version", int | UnsetType, UNSET)]
            rename.update({k: k for k in ("id", "action", "occurred_at", "version")})
        for i, (key, node) in enumerate(items):
            attr = f"f{i}"
            rename[attr] = key
            kind, typ, sub = self.classify(node)
            fields.append((attr, typ | UnsetType, UNSET))
            specs.append((attr, kind, sub))
        cls = msgspec.defstruct(
            f"_Event{next(self.names)}" if top else f"_Part{next(self.names)}",
            fields, rename=rename, omit_defaults=True, gc=False,
        )
        self.specs[cls] = specs
        return cls

    def classify(self, node: Any) -> tuple[str, Any, Any]:
        """(kind, msgspec type, sub) of the field a plan node describes."""
        if node is None:
            return ("leaf", _Scalar, None) if self.strict else ("free", Any, None)
        items, children, wildcard, element = node
        if wildcard is ABSENT and element is ABSENT and items:
            cls = self.struct(items, False)
            return "struct", cls, cls
        if wildcard is None and not children and element is ABSENT:
            if self.strict:
                return "map", dict[str, _Scalar], None
            return "freemap", dict[str, Any], None
        if not items and wildcard is ABSENT and element is not ABSENT and element is not None:
            e_items, _, e_wild, e_elem = element
            if e_wild is ABSENT and e_elem is ABSENT and e_items:
                cls = self.struct(e_items, False)
                return "list", list[cls], cls  # type: ignore[valid-type]
        return "walk", Any, node

    # -- code ----------------------------------------------------------------------

    def emit(self, cls: type, obj: str, indent: int) -> None:
        pad = "    " * indent
        for attr, kind, sub in self.specs[cls]:
            v = self.var()
            if kind in ("struct", "list"):
                e = self.var() if kind == "list" else v
                mark = len(self.lines)
                self.emit(sub, e, indent + (2 if kind == "list" else 1))
                if len(self.lines) > mark:
                    head = [f"{pad}{v} = {obj}.{attr}", f"{pad}if {v} is not UNSET:"]
                    if kind == "list":
                        head.append(f"{pad}    for {e} in {v}:")
                    self.lines[mark:mark] = head
                continue
            self.lines.append(f"{pad}{v} = {obj}.{attr}")
            if kind == "leaf":
                self.lines += [
                    f"{pad}if type({v}) is str and len({v}) >= MIN and search({v}):",
                    f"{pad}    {v} = redact_str({v})",
                    f"{pad}    {obj}.{attr} = UNSET if {v} is DROP else {v}",
                ]
            elif kind == "map":
                k, x = self.var(), self.var()
                self.lines += [
                    f"{pad}if {v} is not UNSET:",
                    f"{pad}    if not ({v}.keys() <= ok):",
                    f"{pad}        fix_keys({v})",
                    f"{pad}    for {k}, {x} in {v}.items():",
                    f"{pad}        if type({x}) is str and len({x}) >= MIN and search({x}):",
                    f"{pad}            scan_values({v})",
                    f"{pad}            break",
                ]
            elif kind == "freemap":
                self.lines += [
                    f"{pad}if {v} is not UNSET:",
                    f"{pad}    {obj}.{attr} = free_dict({v})",
                ]
            elif kind == "free":
                self.lines += [
                    f"{pad}if {v} is not UNSET:",
                    f"{pad}    {v} = free({v})",
                    f"{pad}    {obj}.{attr} = UNSET if {v} is DROP else {v}",
                ]
            else:  # walk
                node = self.const(sub)
                self.lines += [
                    f"{pad}if {v} is not UNSET:",
                    f"{pad}    {v} = walk({node}, {v})",
                    f"{pad}    {obj}.{attr} = UNSET if {v} is DROP else {v}",
                ]

    def function(self, top: type, env: dict[str, Any]) -> Callable[[Any], None]:
        self.lines = []
        self.emit(top, "ev", 1)
        source = "def post(ev):\n" + "\n".join(self.lines or ["    pass"]) + "\n"
        namespace = {**env, **self.env, "UNSET": UNSET}
        exec(compile(source, "<auditshipd.redact_fast>", "exec"), namespace)  # noqa: S102
        post: Callable[[Any], None] = namespace["post"]
        post.__source__ = source  # type: ignore[attr-defined]
        return post


class FastPath:
    """The compiled fast path of one Redactor; see the module docstring."""

    __slots__ = ("_strict_decode", "_loose_decode", "_strict_post", "_loose_post", "_encode",
                 "_redactor", "_drop", "_key_ok", "_key_id")

    def __init__(self, redactor: Redactor, *, drop: Any, key_ok: Any, key_id: Any) -> None:
        self._redactor = redactor
        self._drop, self._key_ok, self._key_id = drop, key_ok, key_id
        items = redactor.policy.plan[0]
        env = {
            "MIN": redactor._min_len,
            "search": redactor._search if redactor._search is not None else (lambda s: None),
            "redact_str": redactor._redact_str,
            "DROP": drop,
            "ok": redactor._ok_keys,
            "fix_keys": self._fix_keys,
            "scan_values": self._scan_values,
            "free_dict": redactor._free_dict,
            "free": redactor._free,
            "walk": redactor._walk,
        }
        strict, loose = _Gen(True), _Gen(False)
        strict_top, loose_top = strict.struct(items, True), loose.struct(items, True)
        self._strict_post = strict.function(strict_top, env)
        self._loose_post = loose.function(loose_top, env)
        self._strict_decode = msgspec.json.Decoder(strict_top).decode
        self._loose_decode = msgspec.json.Decoder(loose_top).decode
        self._encode = msgspec.json.Encoder().encode

    # -- per line ------------------------------------------------------------------

    def redact_line(self, line: bytes) -> bytes:
        if not line.isascii():
            _check_utf8(line)
        try:
            ev = self._strict_decode(line)
        except msgspec.ValidationError:
            return self._loose(line)
        except RecursionError:
            raise msgspec.DecodeError("JSON is malformed: nested too deeply") from None
        try:
            self._strict_post(ev)
        except _Fallback:
            return self._loose(line)
        return self._encode(ev)

    def redact_lines(self, lines: list[bytes]) -> tuple[list[bytes], list[tuple[int, str]]]:
        good: list[bytes] = []
        bad: list[tuple[int, str]] = []
        append = good.append
        redact_line = self.redact_line
        for i, line in enumerate(lines):
            try:
                append(redact_line(line))
            except msgspec.DecodeError as exc:
                bad.append((i, f"invalid JSON: {exc}"))
            except DropEvent as exc:
                bad.append((i, exc.reason))
        return good, bad

    def _loose(self, line: bytes) -> bytes:
        try:
            ev = self._loose_decode(line)
        except msgspec.ValidationError:
            return self._redactor._slow_line(line)
        except RecursionError:
            raise msgspec.DecodeError("JSON is malformed: nested too deeply") from None
        self._loose_post(ev)
        return self._encode(ev)

    # -- free-form maps of scalars (strict tier) -------------------------------------

    def _fix_keys(self, value: dict[str, Any]) -> None:
        """Apply the action to id-named keys in place; other keys keep their order."""
        r = self._redactor
        ok, cache, drop = r._ok_keys, r._key_cache, self._drop
        for key in value.keys() - ok:  # order does not matter: deletes and in-place sets
            kind = cache.get(key)
            if kind is None:
                kind = r._classify_key(key)
            if kind is self._key_ok:
                continue
            if kind is self._key_id:
                x = r._id_value(value[key])
                if x is drop:
                    del value[key]
                else:
                    value[key] = x
            elif kind is drop:
                del value[key]
            else:  # the key is rewritten: its place in the map would change
                raise _Fallback

    def _scan_values(self, value: dict[str, Any]) -> None:
        """Scan the string values of keys that are not id-named (those hold the action's
        result already)."""
        r = self._redactor
        search, min_len = r._search, r._min_len
        if search is None:
            return
        hits = [k for k, x in value.items() if type(x) is str and len(x) >= min_len and search(x)]
        if not hits:
            return
        ok, cache, drop, key_ok = r._ok_keys, r._key_cache, self._drop, self._key_ok
        for key in hits:
            if key not in ok:
                kind = cache.get(key)
                if kind is None:
                    kind = r._classify_key(key)
                if kind is not key_ok:
                    continue
            x = r._redact_str(value[key])
            if x is drop:
                del value[key]
            else:
                value[key] = x


def _check_utf8(line: bytes) -> None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None
