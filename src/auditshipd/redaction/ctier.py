"""The policy compiled for the C tier (:mod:`auditshipd.redaction._redact_c`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import msgspec

from .codegen import TierBuilder
from .ids import DROP, KEY_ID, KEY_OK, IdRedactor
from .policy import Policy

try:
    from . import _redact_c
except ImportError:  # built without a C compiler (setup.py: optional): the Python tiers do it all
    _redact_c = None


# The key kinds of the C tier (see kind_of in c_plan).
_KEEP, _DELETE, _GIVE_UP, _MASK, _HASH = 0, 1, 2, 3, 4


def c_plan(
    policy: Policy, ids: IdRedactor, gen: TierBuilder, top: type, encode: Callable[[Any], bytes]
) -> Any:
    """The policy compiled for the C tier (``auditshipd.redaction._redact_c``), or None when the
    extension is not built, is switched off (``AUDITSHIPD_REDACT_C=0``) or cannot do what
    this policy asks (custom id patterns: only the built-in prefilter run is checked in C;
    parts only the Redactor's walk can do).

    The C tier answers for the lines it can write byte for byte as the tiers below
    would, and returns None for the rest (escaped keys, duplicate keys, anything
    unexpected: see the C file), which then go through the generated Python code.
    """
    if _redact_c is None or os.environ.get("AUDITSHIPD_REDACT_C", "1") == "0":
        return None
    drop, key_ok, key_id = DROP, KEY_OK, KEY_ID
    if policy.prefilter is None:  # then ids.search is the prefilter's: the run C checks
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
    cache, classify = ids.key_cache, ids.classify
    action = ids.action

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
    search, min_len, redact_str = ids.search, ids.min_len, ids.redact_str

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
    mask_json = encode(ids.id_value(None)) if action == "mask" else b"null"
    try:
        return _redact_c.Plan(root, kind_of, redact_str, encode, drop, mask_json, ids.id_value, escaped,
                              ids.number)
    except (ValueError, TypeError):  # a key the C tier does not take (non-ASCII, quotes)
        return None
