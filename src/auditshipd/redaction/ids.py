"""Internal ids in keys and strings: the one place every redaction tier asks.

An :class:`IdRedactor` is compiled once per policy. It classifies a key name (kept,
holds an id, dropped, renamed), redacts the ids inside a string, writes the action's
value for an id-named key (nothing, ``[redacted]`` or a keyed hash), and walks free-form
values (``metadata.*``) with those three. Its caches are public on purpose: the
generated fast path tests whole maps against ``ok_keys`` / ``gone_keys`` with one
C-level set operation, and the C tier caches the answers of :meth:`kind` by key bytes.
The reference redactor, the generated Python tiers and the C tier all go through this
class and nothing else, so they cannot drift apart.

Caches are bounded in entries and in bytes: a key or text longer than
``CACHE_ITEM_MAX`` characters is answered but never kept.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

import msgspec

from .defaults import DEFAULT_KEEP_VALUE_PATTERNS
from .policy import CACHE_ITEM_MAX, Policy, normalize_key

__all__ = ["BIG_INT", "DROP", "HASH_PREFIX", "KEY_ID", "KEY_OK", "MASK", "IdRedactor"]

MASK = "[redacted]"
HASH_PREFIX = "h:"
HASH_HEX_CHARS = 16

# What a key or a value becomes. DROP: the entry goes. KEY_OK: a key kept as it is.
# KEY_ID: a key naming an internal id (its value gets the action).
DROP: Any = type("Drop", (), {"__repr__": lambda self: "DROP"})()
KEY_OK: Any = type("KeyOk", (), {"__repr__": lambda self: "KEY_OK"})()
KEY_ID: Any = type("KeyId", (), {"__repr__": lambda self: "KEY_ID"})()
CACHE_MAX = 8192
# An integer this large or larger in magnitude (16+ digits: snowflake ids, card numbers)
# is checked as its digits would be in a string (IdRedactor.number), and so is a float
# that is such a whole number; a smaller one is kept.
BIG_INT = 10**15
_HASH_TOKEN = re.compile(f"{HASH_PREFIX}[0-9a-f]{{{HASH_HEX_CHARS}}}")
_HASHED = _HASH_TOKEN.fullmatch
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


class IdRedactor:
    """Key classifier, string redactor, id-value action and keyed hash of one policy.

    ``search(text)``: the cheap test (the prefilter, or the id regex itself) a string
    must pass before :meth:`redact_str` can change it; ``min_len``: shorter strings never
    hold an id. ``key_cache`` maps a key to its :meth:`kind`; ``ok_keys`` are the keys
    kept as they are, ``gone_keys`` the keys whose entry goes whole under ``drop``.
    """

    __slots__ = (
        "action",
        "search",
        "min_len",
        "key_cache",
        "ok_keys",
        "gone_keys",
        "hash_cache",
        "_key",
        "_hmac",
        "_key_match",
        "_sub_ids",
        "_sub_keep",
        "_ids_repl",
        "_keep_repl",
        "_keep_needle",
    )

    def __init__(self, policy: Policy) -> None:
        self.action = policy.action
        self._key = policy.hash_key
        # HMAC-SHA256 keyed once: each value copies the keyed state (a third faster than
        # hmac.digest, which sets the key up again for every value).
        self._hmac = hmac.new(self._key, digestmod="sha256") if self._key else None
        self._key_match = policy.key_matcher.fullmatch if policy.key_matcher else None
        rx = policy.id_regex
        quick = policy.prefilter or rx
        self.search: Any = quick.search if quick is not None else None
        self._sub_ids = rx.sub if rx is not None else None
        self._sub_keep = policy.keep_id_regex.sub if policy.keep_id_regex is not None else None
        # What replaces an id match: "drop" and "mask" are constant templates (re.sub then
        # stays in C; a keep match, group 1, is put back by "\1"), "hash" is a callback.
        self._ids_repl: Any = self._replace
        self._keep_repl: Any = self._replace_keep
        if self.action == "drop":
            self._ids_repl, self._keep_repl = "", r"\1"
        elif self.action == "mask":
            self._ids_repl = MASK.replace("\\", r"\\")
        # The default keep pattern (an email) needs an "@"; a custom one may need anything
        # ("" is in every string).
        default_keep = set(policy.keep_value_patterns) <= set(DEFAULT_KEEP_VALUE_PATTERNS)
        self._keep_needle = "@" if default_keep else ""
        self.min_len = max(1, policy.min_id_len)
        self.key_cache: dict[Any, Any] = {}
        self.ok_keys: set[Any] = set()
        self.gone_keys: set[Any] = set()
        self.hash_cache: dict[str, str] = {}

    @property
    def has_hash_key(self) -> bool:
        return self._key is not None

    # -- keys -------------------------------------------------------------------------

    def kind(self, key: Any) -> Any:
        """:meth:`classify`, from the cache when the key was seen before."""
        kind = self.key_cache.get(key)
        return self.classify(key) if kind is None else kind

    def classify(self, key: Any) -> Any:
        """KEY_OK, KEY_ID (the value gets the action; ``(new_key,)`` when the name holds
        an id too), DROP, or a rewritten key string. Remembered (see the module doc)."""
        if type(key) is not str:
            kind = DROP
        elif self._key_match is not None and self._key_match(normalize_key(key)):
            kind = KEY_ID
            if self.action != "drop" and self.search is not None and self.search(key):
                new = self.redact_str(key)
                if new != key:  # the key name itself holds an id: rewrite it too
                    kind = (new or MASK,)
        elif self.search is not None and len(key) >= self.min_len and self.search(key):
            new = self.redact_str(key)
            kind = DROP if new is DROP or not new else new
            if kind is not DROP and kind == key:
                kind = KEY_OK
        else:
            kind = KEY_OK
        if type(key) is not str or len(key) > CACHE_ITEM_MAX:
            return kind  # not cached: the caches stay bounded in bytes, not only in entries
        if len(self.key_cache) >= CACHE_MAX:
            self.key_cache.clear()
            self.ok_keys.clear()
            self.gone_keys.clear()
        self.key_cache[key] = kind
        if kind is KEY_OK:
            self.ok_keys.add(key)
        elif kind is DROP or (kind is KEY_ID and self.action == "drop"):
            self.gone_keys.add(key)
        return kind

    # -- strings and values -------------------------------------------------------------

    def redact_str(self, text: str) -> Any:
        """``text`` with the ids in it cut out, masked or hashed; DROP when ``drop`` left
        nothing but blanks of a string that had an id."""
        if self._sub_keep is not None and self._keep_needle in text:
            out = self._sub_keep(self._keep_repl, text)
        else:
            out = self._sub_ids(self._ids_repl, text)  # type: ignore[misc]
        if self.action == "drop" and out != text and not out.strip():
            return DROP
        return out

    def id_value(self, x: Any) -> Any:
        """What the value of an id-named key becomes: DROP, ``[redacted]`` or its hash."""
        action = self.action
        if action == "drop":
            return DROP
        if action == "mask":
            return MASK
        if type(x) is str:
            # Already a hash (an event redacted twice, a replay): keep it, stay idempotent.
            return x if _HASHED(x) else self.hash(x)
        try:
            text = _encode_sorted(x).decode("utf-8")
        except (TypeError, msgspec.EncodeError):
            return MASK
        return self.hash(text)

    def number(self, x: int | float) -> Any:
        """What an integer of 16+ digits (``abs(x) >= BIG_INT``) becomes: its digits are
        searched as a string's would be, and when they hold an id the integer is one:
        DROP, ``[redacted]`` or the hash of its digits (the hash of the same digits in a
        string). Else ``x``, unchanged. A float that is a whole number that large (an
        id a producer wrote as ``1.2345678901234568e+18``) is that integer: the same
        check of ``int(x)``'s digits, the same value; a smaller float, one with a
        fraction, an infinity or NaN is ``x``."""
        if type(x) is float:
            if not x.is_integer() or -BIG_INT < x < BIG_INT:
                return x
            out = self.number(int(x))
            return x if type(out) is int else out
        if self._sub_ids is None:
            return x
        try:
            text = str(x)
        except ValueError:  # more digits than int -> str converts: no less an id
            return DROP if self.action == "drop" else MASK
        if self.redact_str(text) == text:
            return x
        return self.id_value(x)

    def hash(self, text: str) -> str:
        """``h:`` + the first 16 hex digits of HMAC-SHA256(hash key, text)."""
        h = self.hash_cache.get(text)
        if h is None:
            mac = self._hmac.copy()  # type: ignore[union-attr]
            mac.update(text.encode("utf-8", "surrogatepass"))
            h = HASH_PREFIX + mac.hexdigest()[:HASH_HEX_CHARS]
            if len(text) <= CACHE_ITEM_MAX:
                if len(self.hash_cache) >= CACHE_MAX:
                    self.hash_cache.clear()
                self.hash_cache[text] = h
        return h

    def _replace_keep(self, m: Any) -> str:
        if m.start(1) >= 0:
            return m.group(0)
        return self._replace(m)

    def _replace(self, m: Any) -> str:
        action = self.action
        if action == "drop":
            return ""
        if action == "mask":
            return MASK
        if HASH_PREFIX in m.string and _inside_hash(m):
            return m.group(0)  # a hash we wrote (all 16 hex digits can look like a number)
        return self.hash(m.group(0))

    # -- free-form values (metadata.*): every key classified, every string scanned ------

    def free(self, x: Any) -> Any:
        t = type(x)
        if t is str:
            if self.search is not None and len(x) >= self.min_len and self.search(x):
                return self.redact_str(x)
            return x
        if t is dict:
            return self.free_dict(x)
        if t is list or t is tuple:
            return self.free_list(x)
        if t is int or t is float:
            return x if -BIG_INT < x < BIG_INT else self.number(x)
        if x is None or t is bool:
            return x
        return DROP  # not a JSON value: it could encode to anything

    def free_dict(self, value: dict[Any, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        cache = self.key_cache
        min_len, search = self.min_len, self.search
        for key, x in value.items():
            kind = cache.get(key)
            if kind is None:
                kind = self.classify(key)
            if kind is KEY_OK:
                t = type(x)
                if t is str:
                    if search is not None and len(x) >= min_len and search(x):
                        x = self.redact_str(x)
                        if x is DROP:
                            continue
                elif t is dict:
                    x = self.free_dict(x)
                elif t is list:
                    x = self.free_list(x)
                elif t is int or t is float:
                    if not -BIG_INT < x < BIG_INT:
                        x = self.number(x)
                        if x is DROP:
                            continue
                elif not (x is None or t is bool):
                    x = self.free(x)
                    if x is DROP:
                        continue
                out[key] = x
            elif kind is KEY_ID or type(kind) is tuple:
                x = self.id_value(x)
                if x is not DROP:
                    out[key if kind is KEY_ID else kind[0]] = x
            elif kind is not DROP:
                x = self.free(x)
                if x is not DROP:
                    out[kind] = x
        return out

    def free_list(self, value: Any) -> list[Any]:
        out = []
        append = out.append
        free = self.free
        for x in value:
            x = free(x)
            if x is not DROP:
                append(x)
        return out


def _inside_hash(m: Any) -> bool:
    """Whether match ``m`` lies within an ``h:`` + 16 hex token: redacting twice is a no-op."""
    start, end = m.span()
    span = len(HASH_PREFIX) + HASH_HEX_CHARS
    for token in _HASH_TOKEN.finditer(m.string, max(0, start - span), end + span):
        if token.start() <= start and end <= token.end():
            return True
    return False
