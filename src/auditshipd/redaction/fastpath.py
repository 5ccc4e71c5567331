"""The fused fast path of a policy: journal line -> shipped bytes.

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

* **strict**: leaves typed ``str | int | float | bool | None`` (floats below 1e15, as
  everywhere in this tier), free-form maps typed ``dict[str, scalar]``. Id-named
  keys are handled in place (order kept).
* **loose**, when the strict decode raises ``ValidationError`` (a nested value in
  ``metadata``, a map where a leaf was expected, a float of 1e15 or more anywhere the
  policy keeps: it may be an id written as a float): leaves and maps typed ``Any`` and
  walked with the Redactor's own functions.
* **slow**, when that fails too (a mistyped structure, a missing required field, not
  an object): decode to dicts and call the Redactor, for the exact result or reason.

Known difference: a JSON number out of float range (``1e400``) inside a field the policy
drops is skipped by the fast path, not decoded, so the line is shipped (without that
field) where ``msgspec.json.decode`` would reject the whole line.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import DropEvent
from .codegen import TierBuilder
from .ctier import c_plan
from .events import TOO_DEEP, check_utf8
from .ids import BIG_INT, DROP, KEY_ID, KEY_OK, IdRedactor
from .policy import CACHE_ITEM_MAX, Policy

__all__ = ["FastPath"]


class _Fallback(Exception):
    """The strict tier met something it does not rewrite in place (a renamed key)."""


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
# An integer of 16+ digits in encoded JSON (not a float's digits: no '.' or exponent).
_BIG_NUMBER = re.compile(rb"(?<![0-9.eE+-])-?[0-9]{16,}(?![0-9.eE])").search

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
{check}
{scan}
    except Fallback:
        return loose(line)
    except RecursionError:
        raise DropEvent(TOO_DEEP) from None
    return encode(ev)
'''


class FastPath:
    """The compiled fast path of one Redactor; see the module docstring."""

    __slots__ = ("redact_line", "c_plan", "_loose_decode", "_loose_post", "_encode", "_fallback")

    def __init__(
        self, policy: Policy, ids: IdRedactor, *, walk: Callable[[Any, Any], Any],
        fallback: Callable[[bytes], bytes], c_tier: bool = True,
    ) -> None:
        # walk: the reference redactor's walk of a plan node (parts a Struct cannot
        # mirror); fallback: the reference redactor's whole line (shapes no tier here takes).
        self._fallback = fallback
        items = policy.plan[0]
        search = ids.search
        fix_keys, deep, scan_map = _helpers(ids)
        self._encode = encode = msgspec.json.Encoder().encode
        env = {
            "MIN": ids.min_len,
            "search": search if search is not None else (lambda s: None),
            "redact_str": ids.redact_str,
            "number": ids.number,
            "BIG": BIG_INT,
            "DROP": DROP,
            "ok": ids.ok_keys,
            "gone": ids.gone_keys,
            "NESTED": _NESTED,
            "fix_keys": fix_keys,
            "deep": deep,
            "scan_map": scan_map,
            "fix_runs": _fix_runs(ids, encode),
            "free_dict": ids.free_dict,
            "free": ids.free,
            "walk": walk,
            "encode": encode,
            "check_utf8": check_utf8,
            "ValidationError": msgspec.ValidationError,
            "DecodeError": msgspec.DecodeError,
            "Fallback": _Fallback,
            "DropEvent": DropEvent,
            "TOO_DEEP": TOO_DEEP,
            "loose": self._loose,
            "TABLE": _RUN_TABLE,
            "RUN": _RUN,
            "URL": b"://",
            "HEAD": _HEAD,
        }
        loose = TierBuilder(False)
        loose_top = loose.struct(items, True)
        self._loose_post = loose.compile(
            "def post(ev):\n" + "\n".join(loose.body(loose_top, "loose", 1) or ["    pass"]) + "\n",
            "post", env)
        self._loose_decode = msgspec.json.Decoder(loose_top).decode
        strict = TierBuilder(True, ids.action == "drop")
        strict_top = strict.struct(items, True)
        post = strict.body(strict_top, "post", 2) or ["        pass"]
        scan = strict.body(strict_top, "scan", 2)
        if search is None or not scan:  # nothing to scan: the output is final
            check, scan = "    return encode(ev)", []
        elif policy.prefilter is not None:
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
        self.c_plan = c_plan(policy, ids, strict, strict_top, encode) if c_tier else None
        c_call = ""
        if self.c_plan is not None:
            env["c_redact"] = self.c_plan.redact
            c_call = "    out = c_redact(line)\n    if out is not None:\n        return out\n"
        # post, check and scan run inside one try (its handlers: a renamed key, nesting
        # too deep for the walk), indented one level more.
        check = textwrap.indent(check, "    ")
        source = _STRICT.format(c_tier=c_call, post="\n".join(post), check=check, scan="\n".join(scan))
        env["decode"] = msgspec.json.Decoder(strict_top, float_hook=_small_float).decode
        self.redact_line: Callable[[bytes], bytes] = strict.compile(source, "redact_line", env)

    # -- per line ------------------------------------------------------------------

    def _loose(self, line: bytes) -> bytes:
        try:
            ev = self._loose_decode(line)
        except msgspec.ValidationError:
            return self._fallback(line)
        except RecursionError:
            raise msgspec.DecodeError("JSON is malformed: nested too deeply") from None
        try:
            self._loose_post(ev)
        except RecursionError:
            raise DropEvent(TOO_DEEP) from None
        return self._encode(ev)


def _small_float(text: str) -> float:
    """The strict tier's floats in untyped places (free-form maps below their first three
    levels, walked parts): the double msgspec would parse (both round correctly). One of
    1e15 or more in magnitude raises (msgspec then raises ValidationError): it may be an
    id (a whole number, as ``IdRedactor.number`` checks), the loose tier takes the line.
    Leaves and the maps' first levels are typed with the same bound (``codegen._Float``,
    checked in C), so no float the strict tier keeps needs a check of its own."""
    x = float(text)
    if -BIG_INT < x < BIG_INT:
        return x
    raise ValueError("a float of 1e15 or more: the loose tier checks it")


def _fix_runs(ids: IdRedactor, encode: Callable[[Any], bytes]) -> Callable[[bytes, bytes, int], bytes | None]:
    """``fix_runs(out, tr, at)``: the final output, or None when only the slower scan of
    the decoded event can tell. ``out``: the encoded event, ``tr``: ``out`` translated,
    ``at``: where its first prefilter run after the always-kept fields starts.

    In ASCII output without a backslash (no escapes), a string is its own text between
    two quotes, and a run never contains a quote: the quote-free segment around a run is
    a whole string (an odd number of quotes before it), or JSON syntax (a long number:
    an integer of 16+ digits returns None, the scan gives it the action). A key (followed by ':') is never changed here: id-named keys were
    handled before encoding, and a key that would be rewritten sent the line to the
    loose tier. Each string value with a run gets the ``IdRedactor.redact_str``: the
    same text stays (and is remembered: user agents, sources recur), a new text is
    spliced in as msgspec encodes it, a string that would be removed whole (``drop``)
    returns None. A segment found clean before is skipped at once (were it a key or
    a key this time, it would not change either). A hash written by ``hash`` is left alone. Only for policies whose strict tier has no part walked by the Redactor
    (those strings are redacted already).
    """
    redact_str, drop = ids.redact_str, DROP
    known: set[bytes] = set()
    # With "hash", the values of id-named keys are hashes (``h:`` + 16 hex digits), and
    # _redact_str leaves such a string as it is (hashing is idempotent).
    hashed = re.compile(rb"h:[0-9a-f]{16}").fullmatch if ids.action == "hash" else None
    run = _RUN
    big_number = _BIG_NUMBER

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
            quotes += out.count(b'"', counted, start)
            counted = start
            if not quotes & 1:  # JSON syntax: numbers
                if big_number(seg):
                    return None
            elif seg in known or (hashed is not None and hashed(seg)):
                pass
            elif out[end + 1] != 58:  # a string (odd quotes before), not a key (':')
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


def _helpers(ids: IdRedactor) -> tuple[Callable[[dict[str, Any]], None], ...]:
    """The strict tier's functions for free-form maps (decoded fresh: changed in place).

    ``fix_keys(m)``: the action for the id-named keys of ``m`` (other keys keep their
    place); ``deep(x)``: the same for the map ``x`` and every map nested in it (or in the
    list ``x``), at any depth;
    ``scan_map(m)`` (after those): ids cut out of, masked or hashed in the string values
    at any depth, and integers of 16+ digits that are ids given the action, as
    ``IdRedactor.free_dict`` does. A key that would be renamed (its name
    holds an id) raises ``_Fallback``: its place in the map would change.
    """
    ok, gone, cache, classify, id_value = ids.ok_keys, ids.gone_keys, ids.key_cache, ids.classify, ids.id_value
    redact_str, search, min_len, number = ids.redact_str, ids.search, ids.min_len, ids.number
    drop, key_ok, key_id = DROP, KEY_OK, KEY_ID
    drop_ids = ids.action == "drop"

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
            elif t is int and not -BIG_INT < x < BIG_INT:
                if hits is None:
                    hits = [key]
                else:
                    hits.append(key)
        if hits is None:
            return
        for key in hits:
            if key not in ok:  # an id-named key holds the action's result already
                kind = cache.get(key)
                if kind is None:
                    kind = classify(key)
                if kind is not key_ok:
                    continue
            x = m[key]
            x = redact_str(x) if type(x) is str else number(x)
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
            elif t is int and not -BIG_INT < x < BIG_INT:
                changed = True
                x = number(x)
                if x is drop:
                    continue
            out.append(x)
        if changed:
            items[:] = out

    return fix_keys, deep, scan_map


