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
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

from .errors import DropEvent
from .redact_policy import ABSENT, CACHE_ITEM_MAX

try:
    from . import _redact_c
except ImportError:  # built without a C compiler (setup.py: optional): the Python tiers do it all
    _redact_c = None

# The key kinds of the C tier (see kind_of in _c_plan).
_KEEP, _DELETE, _GIVE_UP, _MASK, _HASH = 0, 1, 2, 3, 4

if TYPE_CHECKING:
    from .redact import Redactor

__all__ = ["FastPath", "check_event", "redact_each"]

_Required = Annotated[str, msgspec.Meta(min_length=1)]
_Scalar = str | int | float | bool | None
_REQUIRED = ("id", "action", "occurred_at")


class _Fallback(Exception):
    """The strict tier met something it does not rewrite in place (a renamed key)."""


def redact_each(
    redact_line: Callable[[bytes], bytes], lines: list[bytes]
) -> tuple[list[bytes], list[tuple[int, str]]]:
    """``redact_line`` over a batch: (outputs in order, [(index, reason)] of the bad lines,
    reasons reading ``invalid JSON: ...`` or the DropEvent reason)."""
    good: list[bytes] = []
    bad: list[tuple[int, str]] = []
    append = good.append
    for i, line in enumerate(lines):
        try:
            append(redact_line(line))
        except msgspec.DecodeError as exc:
            bad.append((i, f"invalid JSON: {exc}"))
        except DropEvent as exc:
            bad.append((i, exc.reason))
    return good, bad


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
            return ("map" if self.strict else "freemap"), dict[str, Any], None
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
        of the free-form maps.
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
        exec(compile(source, "<auditshipd.redact_fast>", "exec"), namespace)  # noqa: S102
        fn: Callable[..., Any] = namespace[name]
        fn.__source__ = source  # type: ignore[attr-defined]
        return fn


# The prefilter of the built-in id patterns is "a run of 16 characters of this class" (or
# a URL's userinfo, found by looking for "://");
# msgspec writes those characters as they are, so a string that has such a run leaves one
# in the encoded output. translate() maps the class to "a" and everything else to " ".
_RUN_CLASS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_~+/=-")
_RUN_TABLE = bytes(0x61 if b in _RUN_CLASS else 0x20 for b in range(256))
_RUN = b"a" * 16
# Length of '{"id":"' + '","action":"' + '","occurred_at":"': the output's first 36 bytes
# plus the three values' lengths come before any allowed field (more if a value has
# escapes or non-ASCII characters: then the check only looks at a few bytes more).
_HEAD = 36
_NESTED = (dict, list)
_CLEAN_MAX = 4096

_STRICT = '''\
def redact_line(line):
{c_tier}    if not line.isascii():
        check_utf8(line)
    try:
        ev = decode(line)
    except ValidationError:
        return loose(line)
    except RecursionError:
        raise DecodeError("JSON is malformed: nested too deeply") from None
    try:
{post}
    except Fallback:
        return loose(line)
{check}
{scan}
    return encode(ev)
'''


class FastPath:
    """The compiled fast path of one Redactor; see the module docstring."""

    __slots__ = ("redact_line", "c_plan", "_loose_decode", "_loose_post", "_encode", "_redactor")

    def __init__(
        self, redactor: Redactor, *, drop: Any, key_ok: Any, key_id: Any, c_tier: bool = True
    ) -> None:
        self._redactor = redactor
        items = redactor.policy.plan[0]
        search = redactor._search
        fix_keys, deep, scan_map = _helpers(redactor, drop, key_ok, key_id)
        self._encode = encode = msgspec.json.Encoder().encode
        env = {
            "MIN": redactor._min_len,
            "search": search if search is not None else (lambda s: None),
            "redact_str": redactor._redact_str,
            "DROP": drop,
            "ok": redactor._ok_keys,
            "gone": redactor._gone_keys,
            "NESTED": _NESTED,
            "fix_keys": fix_keys,
            "deep": deep,
            "scan_map": scan_map,
            "fix_runs": _fix_runs(redactor, drop, encode),
            "free_dict": redactor._free_dict,
            "free": redactor._free,
            "walk": redactor._walk,
            "encode": encode,
            "check_utf8": _check_utf8,
            "ValidationError": msgspec.ValidationError,
            "DecodeError": msgspec.DecodeError,
            "Fallback": _Fallback,
            "loose": self._loose,
            "TABLE": _RUN_TABLE,
            "RUN": _RUN,
            "URL": b"://",
            "HEAD": _HEAD,
        }
        loose = _Gen(False)
        loose_top = loose.struct(items, True)
        self._loose_post = loose.compile(
            "def post(ev):\n" + "\n".join(loose.body(loose_top, "loose", 1) or ["    pass"]) + "\n",
            "post", env)
        self._loose_decode = msgspec.json.Decoder(loose_top).decode
        strict = _Gen(True, redactor._action == "drop")
        strict_top = strict.struct(items, True)
        post = strict.body(strict_top, "post", 2) or ["        pass"]
        scan = strict.body(strict_top, "scan", 1)
        if search is None or not scan:  # nothing to scan: the output is final
            check, scan = "    return encode(ev)", []
        elif redactor.policy.prefilter is not None:
            # A URL's userinfo ("://" ... "@") is the prefilter's other half: such events
            # take the scan of the decoded event (rare: fix_runs only follows runs).
            check = ("    out = encode(ev)\n    tr = out.translate(TABLE)\n"
                     "    head = HEAD + len(ev.id) + len(ev.action) + len(ev.occurred_at)\n"
                     "    at = tr.find(RUN, head)\n    url = out.find(URL, head) >= 0\n"
                     "    if at < 0 and not url:\n        return out")
            if not any(kind == "walk" for specs in strict.specs.values() for _, kind, _ in specs):
                check += ("\n    if not url:\n        out = fix_runs(out, tr, at)\n"
                          "        if out is not None:\n            return out")
        else:  # custom id patterns: every string leaf is searched
            check = ""
        self.c_plan = _c_plan(redactor, strict, strict_top, encode, drop, key_ok, key_id) if c_tier else None
        c_call = ""
        if self.c_plan is not None:
            env["c_redact"] = self.c_plan.redact
            c_call = "    out = c_redact(line)\n    if out is not None:\n        return out\n"
        source = _STRICT.format(c_tier=c_call, post="\n".join(post), check=check, scan="\n".join(scan))
        env["decode"] = msgspec.json.Decoder(strict_top).decode
        self.redact_line: Callable[[bytes], bytes] = strict.compile(source, "redact_line", env)

    # -- per line ------------------------------------------------------------------

    def _loose(self, line: bytes) -> bytes:
        try:
            ev = self._loose_decode(line)
        except msgspec.ValidationError:
            return self._redactor._slow_line(line)
        except RecursionError:
            raise msgspec.DecodeError("JSON is malformed: nested too deeply") from None
        self._loose_post(ev)
        return self._encode(ev)


def _fix_runs(r: Redactor, drop: Any, encode: Callable[[Any], bytes]) -> Callable[[bytes, bytes, int], bytes | None]:
    """``fix_runs(out, tr, at)``: the final output, or None when only the slower scan of
    the decoded event can tell. ``out``: the encoded event, ``tr``: ``out`` translated,
    ``at``: where its first prefilter run after the always-kept fields starts.

    In ASCII output without a backslash (no escapes), a string is its own text between
    two quotes, and a run never contains a quote: the quote-free segment around a run is
    a whole string (an odd number of quotes before it), or JSON syntax (a long number:
    never redacted). A key (followed by ':') is never changed here: id-named keys were
    handled before encoding, and a key that would be rewritten sent the line to the
    loose tier. Each string value with a run gets the Redactor's own ``_redact_str``: the
    same text stays (and is remembered: user agents, sources recur), a new text is
    spliced in as msgspec encodes it, a string that would be removed whole (``drop``)
    returns None. A segment found clean before is skipped at once (were it a key or
    syntax this time, it would not change either). A hash written by ``hash`` is left alone. Only for policies whose strict tier has no part walked by the Redactor
    (those strings are redacted already).
    """
    redact_str = r._redact_str
    known: set[bytes] = set()
    # With "hash", the values of id-named keys are hashes (``h:`` + 16 hex digits), and
    # _redact_str leaves such a string as it is (hashing is idempotent).
    hashed = re.compile(rb"h:[0-9a-f]{16}").fullmatch if r._action == "hash" else None
    run = _RUN

    def fix_runs(out: bytes, tr: bytes, at: int) -> bytes | None:
        if b"\\" in out or not out.isascii():
            return None
        pieces: list[bytes] | None = None
        last = quotes = counted = 0
        while at >= 0:
            end = out.find(b'"', at)
            if end < 0:
                return None
            start = out.rfind(b'"', 0, at) + 1
            seg = out[start:end]
            if seg in known or (hashed is not None and hashed(seg)):
                at = tr.find(run, end)
                continue
            quotes += out.count(b'"', counted, start)
            counted = start
            if quotes & 1 and out[end + 1] != 58:  # a string (odd quotes before), not a key (':')
                text = seg.decode("ascii")
                new = redact_str(text)
                if new == text:
                    if len(seg) <= CACHE_ITEM_MAX:  # a longer one is not kept: bounded bytes
                        if len(known) >= _CLEAN_MAX:
                            known.clear()
                        known.add(seg)
                elif new is drop:
                    return None
                else:
                    if pieces is None:
                        pieces = []
                    pieces.append(out[last:start - 1])
                    pieces.append(encode(new))
                    last = end + 1
            at = tr.find(run, end)
        if pieces is None:
            return out
        pieces.append(out[last:])
        return b"".join(pieces)

    return fix_runs


def _helpers(r: Redactor, drop: Any, key_ok: Any, key_id: Any) -> tuple[Callable[[dict[str, Any]], None], ...]:
    """The strict tier's functions for free-form maps (decoded fresh: changed in place).

    ``fix_keys(m)``: the action for the id-named keys of ``m`` (other keys keep their
    place); ``deep(x)``: the same for the map ``x`` and every map nested in it (or in the
    list ``x``), at any depth;
    ``scan_map(m)`` (after those): ids cut out of, masked or hashed in the string values
    at any depth, as ``Redactor._free_dict`` does. A key that would be renamed (its name
    holds an id) raises ``_Fallback``: its place in the map would change.
    """
    ok, gone, cache, classify, id_value = r._ok_keys, r._gone_keys, r._key_cache, r._classify_key, r._id_value
    redact_str, search, min_len = r._redact_str, r._search, r._min_len
    drop_ids = r._action == "drop"

    def fix_keys(m: dict[str, Any]) -> None:
        for key in m.keys() - ok:  # deletes and in-place sets: the order does not matter
            kind = cache.get(key)
            if kind is None:
                kind = classify(key)
            if kind is key_id:
                if drop_ids:
                    del m[key]
                else:
                    m[key] = id_value(m[key])
            elif kind is drop:
                del m[key]
            elif kind is not key_ok:
                raise _Fallback

    def deep(x: dict[str, Any] | list[Any]) -> None:
        if type(x) is dict:
            if drop_ids:
                for key in x.keys() & gone:
                    del x[key]
            if not (x.keys() <= ok):
                fix_keys(x)
            x = x.values()  # type: ignore[assignment]
        for y in x:
            if type(y) in _NESTED:
                deep(y)

    def scan_map(m: dict[str, Any]) -> None:
        hits = None
        for key, x in m.items():
            t = type(x)
            if t is str:
                if len(x) >= min_len and search(x):  # type: ignore[misc]
                    if hits is None:
                        hits = [key]
                    else:
                        hits.append(key)
            elif t is dict:
                scan_map(x)
            elif t is list:
                scan_list(x)
        if hits is None:
            return
        for key in hits:
            if key not in ok:  # an id-named key holds the action's result already
                kind = cache.get(key)
                if kind is None:
                    kind = classify(key)
                if kind is not key_ok:
                    continue
            x = redact_str(m[key])
            if x is drop:
                del m[key]
            else:
                m[key] = x

    def scan_list(items: list[Any]) -> None:
        out = []
        changed = False
        for x in items:
            t = type(x)
            if t is str:
                if len(x) >= min_len and search(x):  # type: ignore[misc]
                    changed = True
                    x = redact_str(x)
                    if x is drop:
                        continue
            elif t is dict:
                scan_map(x)
            elif t is list:
                scan_list(x)
            out.append(x)
        if changed:
            items[:] = out

    return fix_keys, deep, scan_map


def _c_plan(
    r: Redactor, gen: _Gen, top: type, encode: Callable[[Any], bytes], drop: Any, key_ok: Any, key_id: Any
) -> Any:
    """The policy compiled for the C tier (``auditshipd._redact_c``), or None when the
    extension is not built, is switched off (``AUDITSHIPD_REDACT_C=0``) or cannot do what
    this policy asks (custom id patterns: only the built-in prefilter run is checked in C;
    parts only the Redactor's walk can do).

    The C tier answers for the lines it can write byte for byte as the tiers below
    would, and returns None for the rest (escaped keys, duplicate keys, anything
    unexpected: see the C file), which then go through the generated Python code.
    """
    if _redact_c is None or os.environ.get("AUDITSHIPD_REDACT_C", "1") == "0":
        return None
    if r.policy.prefilter is None:  # then r._search is the prefilter's: the run C checks
        return None
    kinds = {"leaf": _redact_c.K_LEAF, "map": _redact_c.K_MAP}

    def node(cls: type) -> tuple[Any, ...] | None:
        out = []
        for key, (_attr, kind, sub) in zip(gen.keys[cls], gen.specs[cls], strict=True):
            if kind in kinds:
                out.append((key, kinds[kind], None))
            elif kind in ("struct", "list"):
                inner = node(sub)
                if inner is None:
                    return None
                out.append((key, _redact_c.K_STRUCT if kind == "struct" else _redact_c.K_LIST, inner))
            else:  # walk: the Redactor's own walk
                return None
        return tuple(out)

    root = node(top)
    if root is None or any(key in ("id", "action", "occurred_at", "version") for key, _, _ in root):
        return None
    root = (("id", _redact_c.K_REQ, None), ("action", _redact_c.K_REQ, None),
            ("occurred_at", _redact_c.K_REQ, None), ("version", _redact_c.K_VERSION, None), *root)
    cache, classify = r._key_cache, r._classify_key
    action = r._action

    def kind_of(key: str) -> int:
        kind = cache.get(key)
        if kind is None:
            kind = classify(key)
        if kind is key_ok:
            return _KEEP
        if kind is drop or (kind is key_id and action == "drop"):
            return _DELETE
        if kind is key_id:
            return _MASK if action == "mask" else _HASH
        return _GIVE_UP  # renamed (the name holds an id): the Python tiers

    decode_str = msgspec.json.Decoder(str).decode
    search, min_len, redact_str = r._search, r._min_len, r._redact_str

    def escaped(raw: bytes) -> Any:
        """A kept JSON string with backslash escapes (quotes included): as the Python
        tiers write it (raises when msgspec does not take it: C then hands the line back)."""
        text = decode_str(raw)
        if len(text) >= min_len and search(text):
            text = redact_str(text)
            if text is drop:
                return drop
        return encode(text)

    # What "mask" writes for the value of an id-named key, whatever the value.
    mask_json = encode(r._id_value(None)) if action == "mask" else b"null"
    try:
        return _redact_c.Plan(root, kind_of, redact_str, encode, drop, mask_json, r._id_value, escaped)
    except (ValueError, TypeError):  # a key the C tier does not take (non-ASCII, quotes)
        return None


def _check_utf8(line: bytes) -> None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None
