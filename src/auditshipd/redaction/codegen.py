"""Generated per-policy code of the fast path's Python tiers: msgspec Struct types
mirroring the allowlist and the straight-line functions that finish each event."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from .defaults import ABSENT
from .ids import BIG_INT

_Required = Annotated[str, msgspec.Meta(min_length=1)]


# The strict tier's floats are below 1e15 in magnitude: a larger one (a whole one may be
# an id, IdRedactor.number) fails its decode and the line goes to the loose tier, which
# checks it. Checked by msgspec in C for leaves and the first levels of free-form maps
# (any JSON value there, typed), by the decoder's float_hook below them.
_Float = Annotated[float, msgspec.Meta(gt=-float(BIG_INT), lt=float(BIG_INT))]
_Scalar = str | int | _Float | bool | None


def _map_values(levels: int) -> Any:
    value: Any = Any
    for _ in range(levels):
        value = _Scalar | list[value] | dict[str, value]
    return value


_MAP = dict[str, _map_values(3)]  # type: ignore[misc]


class TierBuilder:
    """Builds the Struct types and the source of the per-event functions for one tier."""

    def __init__(self, strict: bool, drop: bool = False) -> None:
        self.strict = strict
        self.drop = drop  # action "drop": id-named entries are deleted, a C-level intersection
        self.names = itertools.count()
        self.env: dict[str, Any] = {}
        self.lines: list[str] = []
        self.specs: dict[type, list[tuple[str, str, Any]]] = {}
        self.keys: dict[type, list[str]] = {}  # the JSON key of each spec, in order

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
        self.keys[cls] = [key for key, _ in items]
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
            return ("map", _MAP, None) if self.strict else ("freemap", dict[str, Any], None)
        if not items and wildcard is ABSENT and element is not ABSENT and element is not None:
            e_items, _, e_wild, e_elem = element
            if e_wild is ABSENT and e_elem is ABSENT and e_items:
                cls = self.struct(e_items, False)
                return "list", list[cls], cls  # type: ignore[valid-type]
        return "walk", Any, node

    # -- code ----------------------------------------------------------------------

    def emit(self, cls: type, obj: str, indent: int, mode: str) -> None:
        """Append the code for the fields of ``cls`` (held in ``obj``) to ``self.lines``.

        ``mode`` "loose": every allowed value goes through the Redactor's own functions.
        Strict tier, "post" (every event): id-named keys of the free-form maps, at any
        depth, and the parts only the Redactor's walk can do; "scan" (only when the
        encoded output has a run the prefilter flags): the string leaves and the strings
        of the free-form maps, and their integers of 16+ digits (``IdRedactor.number``).
        """
        pad = "    " * indent
        for attr, kind, sub in self.specs[cls]:
            v = self.var()
            if kind in ("struct", "list"):
                e = self.var() if kind == "list" else v
                mark = len(self.lines)
                self.emit(sub, e, indent + (2 if kind == "list" else 1), mode)
                if len(self.lines) > mark:
                    head = [f"{pad}{v} = {obj}.{attr}", f"{pad}if {v} is not UNSET:"]
                    if kind == "list":
                        head.append(f"{pad}    for {e} in {v}:")
                    self.lines[mark:mark] = head
                continue
            get = f"{pad}{v} = {obj}.{attr}"
            if kind == "leaf":
                if mode == "scan":
                    self.lines += [
                        get,
                        f"{pad}if type({v}) is str and len({v}) >= MIN and search({v}):",
                        f"{pad}    {v} = redact_str({v})",
                        f"{pad}    {obj}.{attr} = UNSET if {v} is DROP else {v}",
                        f"{pad}elif type({v}) is int and not -BIG < {v} < BIG:",
                        f"{pad}    {v} = number({v})",
                        f"{pad}    {obj}.{attr} = UNSET if {v} is DROP else {v}",
                    ]
            elif kind == "map":
                if mode == "scan":
                    self.lines += [get, f"{pad}if {v} is not UNSET:", f"{pad}    scan_map({v})"]
                else:
                    x, y = self.var(), self.var()
                    self.lines += [
                        get,
                        f"{pad}if {v} is not UNSET:",
                        *([f"{pad}    for {x} in {v}.keys() & gone:", f"{pad}        del {v}[{x}]"]
                          if self.drop else []),
                        f"{pad}    if not ({v}.keys() <= ok):",
                        f"{pad}        fix_keys({v})",
                        f"{pad}    for {x} in {v}.values():",
                        f"{pad}        if type({x}) is dict:",
                        *([f"{pad}            for {y} in {x}.keys() & gone:", f"{pad}                del {x}[{y}]"]
                          if self.drop else []),
                        f"{pad}            if not ({x}.keys() <= ok):",
                        f"{pad}                fix_keys({x})",
                        f"{pad}            for {y} in {x}.values():",
                        f"{pad}                if type({y}) in NESTED:",
                        f"{pad}                    deep({y})",
                        f"{pad}        elif type({x}) is list:",
                        f"{pad}            deep({x})",
                    ]
            elif kind == "freemap":
                self.lines += [get, f"{pad}if {v} is not UNSET:", f"{pad}    {obj}.{attr} = free_dict({v})"]
            elif kind == "free":
                self.lines += [
                    get,
                    f"{pad}if {v} is not UNSET:",
                    f"{pad}    {v} = free({v})",
                    f"{pad}    {obj}.{attr} = UNSET if {v} is DROP else {v}",
                ]
            elif mode != "scan":  # walk: the Redactor's walk does all of it, strings included
                node = self.const(sub)
                self.lines += [
                    get,
                    f"{pad}if {v} is not UNSET:",
                    f"{pad}    {v} = walk({node}, {v})",
                    f"{pad}    {obj}.{attr} = UNSET if {v} is DROP else {v}",
                ]

    def body(self, top: type, mode: str, indent: int) -> list[str]:
        self.lines = []
        self.emit(top, "ev", indent, mode)
        return self.lines

    def compile(self, source: str, name: str, env: dict[str, Any]) -> Callable[..., Any]:
        namespace = {**env, **self.env, "UNSET": UNSET}
        exec(compile(source, "<auditshipd.redaction.fastpath>", "exec"), namespace)
        fn: Callable[..., Any] = namespace[name]
        fn.__source__ = source  # type: ignore[attr-defined]
        return fn
