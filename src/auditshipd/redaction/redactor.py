"""Redaction: only the fields a policy allows leave the machine, minus internal ids.

``compile_policy`` checks a ``[redaction]`` table once and returns a :class:`Redactor`,
a plain callable ``(event) -> event`` run on every event before any sink (the portal
included) sees it. The policy is compiled into a tree of tuples that is walked together
with the event; keys are classified once per distinct key string (cached), and all the
id regexes are one compiled alternation, so no glob or pattern list is looped over per
event.

What a Redactor does with an event:

* ``id``, ``action``, ``occurred_at`` (required strings) and ``version`` (an int) are
  copied as they are: the event id is customer-facing, receivers dedupe on it. A missing
  or mistyped required field raises :class:`~auditshipd.errors.DropEvent` (the core
  quarantines the event with the reason).
* Every other field leaves only when an ``allow`` path reaches it. Values under an
  allowed path are still scanned; free-form parts (``metadata.*``, a path ending on a
  map or a list) are walked: keys whose name looks like an id (``id_key_patterns``) or
  holds an id get the action, and ids inside string values are cut out (or masked, or
  hashed) wherever they sit in the string. Values matching ``keep_value_patterns``
  (email addresses by default) are left alone.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import DropEvent
from .defaults import ABSENT, DEFAULT_KEEP_VALUE_PATTERNS, DEFAULT_RAW
from .events import check_event, redact_each
from .fastpath import FastPath
from .policy import CACHE_ITEM_MAX, Policy, normalize_key, parse_policy

__all__ = ["DEFAULT_POLICY", "MASK", "Redactor", "compile_policy"]

MASK = "[redacted]"
HASH_PREFIX = "h:"
HASH_HEX_CHARS = 16

_DROP: Any = type("Drop", (), {"__repr__": lambda self: "DROP"})()
_KEY_OK: Any = type("KeyOk", (), {"__repr__": lambda self: "KEY_OK"})()
_KEY_ID: Any = type("KeyId", (), {"__repr__": lambda self: "KEY_ID"})()
_CACHE_MAX = 8192
_HASH_TOKEN = re.compile(f"{HASH_PREFIX}[0-9a-f]{{{HASH_HEX_CHARS}}}")
_HASHED = _HASH_TOKEN.fullmatch
_encode_sorted = msgspec.json.Encoder(order="sorted").encode
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class Redactor:
    """A compiled redaction policy. Call it on an event dict; get a new, redacted dict."""

    __slots__ = (
        "policy",
        "_plan",
        "_action",
        "_key",
        "_hmac",
        "_key_match",
        "_search",
        "_sub_ids",
        "_sub_keep",
        "_ids_repl",
        "_keep_repl",
        "_keep_needle",
        "_min_len",
        "_key_cache",
        "_ok_keys",
        "_gone_keys",
        "_hash_cache",
        "_fast",
        "redact_line",
        "_root_items",
        "_root_children",
        "_root_wildcard",
    )

    def __init__(self, policy: Policy, *, c_tier: bool = True) -> None:
        self.policy = policy
        self._plan = policy.plan
        self._action = policy.action
        self._key = policy.hash_key
        # HMAC-SHA256 keyed once: each value copies the keyed state (a third faster than
        # hmac.digest, which sets the key up again for every value).
        self._hmac = hmac.new(self._key, digestmod="sha256") if self._key else None
        self._key_match = policy.key_matcher.fullmatch if policy.key_matcher else None
        rx = policy.id_regex
        quick = policy.prefilter or rx
        self._search = quick.search if quick is not None else None
        self._sub_ids = rx.sub if rx is not None else None
        self._sub_keep = policy.keep_id_regex.sub if policy.keep_id_regex is not None else None
        # What replaces an id match: "drop" and "mask" are constant templates (re.sub then
        # stays in C; a keep match, group 1, is put back by "\1"), "hash" is a callback.
        self._ids_repl: Any = self._replace
        self._keep_repl: Any = self._replace_keep
        if self._action == "drop":
            self._ids_repl, self._keep_repl = "", r"\1"
        elif self._action == "mask":
            self._ids_repl = MASK.replace("\\", r"\\")
        # The default keep pattern (an email) needs an "@"; a custom one may need anything
        # ("" is in every string).
        default_keep = set(policy.keep_value_patterns) <= set(DEFAULT_KEEP_VALUE_PATTERNS)
        self._keep_needle = "@" if default_keep else ""
        self._min_len = max(1, policy.min_id_len)
        self._key_cache: dict[Any, Any] = {}
        self._ok_keys: set[Any] = set()  # the keys classified _KEY_OK, for C-level subset tests
        # The keys whose whole entry goes ("drop": _KEY_ID and _DROP), for C-level intersections.
        self._gone_keys: set[Any] = set()
        self._hash_cache: dict[str, str] = {}
        self._root_items, self._root_children, self._root_wildcard, root_element = self._plan
        self._fast: FastPath | None = None
        if self._root_wildcard is ABSENT and root_element is ABSENT:
            self._fast = FastPath(self, drop=_DROP, key_ok=_KEY_OK, key_id=_KEY_ID, c_tier=c_tier)
        # redact_line(line: bytes) -> bytes: one journal line in, the redacted event out as
        # compact JSON bytes, the same bytes as ``encode(self(decode(line)))`` without
        # building the fields the policy drops (see :mod:`auditshipd.redaction.fastpath`). Raises
        # ``msgspec.DecodeError`` for invalid JSON or UTF-8, DropEvent when the line is not
        # an object or lacks a required field (the reason says which). An attribute, not a
        # method: the daemon calls it once per event, straight into the generated code.
        self.redact_line: Callable[[bytes], bytes] = (
            self._fast.redact_line if self._fast is not None else self._slow_line
        )

    def __repr__(self) -> str:
        return (
            f"<Redactor {self.policy.source} action={self._action} "
            f"allow={len(self.policy.allow)} paths hash_key={'<set>' if self._key else 'none'}>"
        )

    # -- public API -------------------------------------------------------------------

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return the redacted copy of ``event``; raise DropEvent if it cannot be shipped."""
        if type(event) is not dict:
            raise DropEvent("event is not a JSON object")
        try:
            out = {"id": event["id"], "action": event["action"], "occurred_at": event["occurred_at"]}
        except KeyError as exc:
            raise DropEvent(f"required field {exc.args[0]!r} is missing") from None
        for name in ("id", "action", "occurred_at"):
            value = out[name]
            if type(value) is not str or not value:
                raise DropEvent(f"required field {name!r} must be a non-empty string")
        version = event.get("version")
        if type(version) is int:
            out["version"] = version
        if self._root_wildcard is ABSENT:
            self._fill_explicit(self._root_items, event, out)
        else:
            self._fill_wild(self._root_children, self._root_wildcard, event, out, True)
        return out

    def redact_many(
        self, events: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
        """Redact a list: (kept events in order, [(index, reason)] of the dropped ones)."""
        kept: list[dict[str, Any]] = []
        dropped: list[tuple[int, str]] = []
        call = self.__call__
        for i, event in enumerate(events):
            try:
                kept.append(call(event))
            except DropEvent as exc:
                dropped.append((i, exc.reason))
        return kept, dropped

    def redact_lines(self, lines: list[bytes]) -> tuple[list[bytes], list[tuple[int, str]]]:
        """:meth:`redact_line` over a batch: (outputs in order, [(index, reason)] of the bad
        lines). Reasons read ``invalid JSON: ...`` or the DropEvent reason."""
        return redact_each(self.redact_line, lines)

    def _slow_line(self, line: bytes) -> bytes:
        try:
            obj = _decode(line)
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"invalid UTF-8: {exc}") from None
        except RecursionError:
            raise msgspec.DecodeError("JSON is malformed: nested too deeply") from None
        reason = check_event(obj)
        if reason is not None:
            raise DropEvent(reason)
        return _encode(self(obj))

    def hash_value(self, text: str) -> str:
        """The keyed hash this policy writes in place of ``text`` (``h:`` + 16 hex)."""
        if self._key is None:
            raise ValueError("this policy has no hash key")
        return self._hash(text)

    # -- the walk ---------------------------------------------------------------------

    def _walk(self, node: Any, value: Any) -> Any:
        if node is None:
            return self._free(value)
        items, children, wildcard, element = node
        t = type(value)
        if t is dict:
            if wildcard is ABSENT:
                if not items:
                    return _DROP
                out: dict[str, Any] = {}
                self._fill_explicit(items, value, out)
                return out
            out = {}
            self._fill_wild(children, wildcard, value, out, False)
            return out
        if t is list and element is not ABSENT:
            result = []
            append = result.append
            for item in value:
                item = self._walk(element, item)
                if item is not _DROP:
                    append(item)
            return result
        return _DROP

    def _fill_explicit(self, items: Any, value: dict[str, Any], out: dict[str, Any]) -> None:
        min_len, search = self._min_len, self._search
        for key, node in items:
            if key not in value:
                continue
            x = value[key]
            if node is None:
                t = type(x)
                if t is str:
                    if search is not None and len(x) >= min_len and search(x):
                        x = self._redact_str(x)
                        if x is _DROP:
                            continue
                elif t is dict:
                    x = self._free_dict(x)
                elif t is list:
                    x = self._free_list(x)
                elif not (x is None or t is int or t is float or t is bool):
                    continue
            else:
                x = self._walk(node, x)
                if x is _DROP:
                    continue
            out[key] = x

    def _fill_wild(
        self, children: dict[str, Any], wildcard: Any, value: dict[str, Any], out: dict[str, Any],
        root: bool,
    ) -> None:
        cache = self._key_cache
        for key, x in value.items():
            node = children.get(key, ABSENT)
            if node is ABSENT:
                if root and key in ("id", "action", "occurred_at", "version"):
                    continue
                kind = cache.get(key)
                if kind is None:
                    kind = self._classify_key(key)
                if kind is _KEY_ID or type(kind) is tuple:
                    x = self._id_value(x)
                    if x is not _DROP:
                        out[key if kind is _KEY_ID else kind[0]] = x
                    continue
                if kind is _DROP:
                    continue
                if kind is not _KEY_OK:
                    key = kind
                node = wildcard
            x = self._free(x) if node is None else self._walk(node, x)
            if x is not _DROP:
                out[key] = x

    def _free(self, x: Any) -> Any:
        t = type(x)
        if t is str:
            if self._search is not None and len(x) >= self._min_len and self._search(x):
                return self._redact_str(x)
            return x
        if t is dict:
            return self._free_dict(x)
        if t is list or t is tuple:
            return self._free_list(x)
        if x is None or t is int or t is float or t is bool:
            return x
        return _DROP  # not a JSON value: it could encode to anything

    def _free_dict(self, value: dict[Any, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        cache = self._key_cache
        min_len, search = self._min_len, self._search
        for key, x in value.items():
            kind = cache.get(key)
            if kind is None:
                kind = self._classify_key(key)
            if kind is _KEY_OK:
                t = type(x)
                if t is str:
                    if search is not None and len(x) >= min_len and search(x):
                        x = self._redact_str(x)
                        if x is _DROP:
                            continue
                elif t is dict:
                    x = self._free_dict(x)
                elif t is list:
                    x = self._free_list(x)
                elif not (x is None or t is int or t is float or t is bool):
                    x = self._free(x)
                    if x is _DROP:
                        continue
                out[key] = x
            elif kind is _KEY_ID or type(kind) is tuple:
                x = self._id_value(x)
                if x is not _DROP:
                    out[key if kind is _KEY_ID else kind[0]] = x
            elif kind is not _DROP:
                x = self._free(x)
                if x is not _DROP:
                    out[kind] = x
        return out

    def _free_list(self, value: Any) -> list[Any]:
        out = []
        append = out.append
        free = self._free
        for x in value:
            x = free(x)
            if x is not _DROP:
                append(x)
        return out

    # -- keys, strings, actions -------------------------------------------------------

    def _classify_key(self, key: Any) -> Any:
        """_KEY_OK, _KEY_ID (the value gets the action; ``(new_key,)`` when the name holds
        an id too), _DROP, or a rewritten key string."""
        if type(key) is not str:
            kind = _DROP
        elif self._key_match is not None and self._key_match(normalize_key(key)):
            kind = _KEY_ID
            if self._action != "drop" and self._search is not None and self._search(key):
                new = self._redact_str(key)
                if new != key:  # the key name itself holds an id: rewrite it too
                    kind = (new or MASK,)
        elif self._search is not None and len(key) >= self._min_len and self._search(key):
            new = self._redact_str(key)
            kind = _DROP if new is _DROP or not new else new
            if kind is not _DROP and kind == key:
                kind = _KEY_OK
        else:
            kind = _KEY_OK
        if type(key) is not str or len(key) > CACHE_ITEM_MAX:
            return kind  # not cached: the caches stay bounded in bytes, not only in entries
        if len(self._key_cache) >= _CACHE_MAX:
            self._key_cache.clear()
            self._ok_keys.clear()
            self._gone_keys.clear()
        self._key_cache[key] = kind
        if kind is _KEY_OK:
            self._ok_keys.add(key)
        elif kind is _DROP or (kind is _KEY_ID and self._action == "drop"):
            self._gone_keys.add(key)
        return kind

    def _redact_str(self, text: str) -> Any:
        if self._sub_keep is not None and self._keep_needle in text:
            out = self._sub_keep(self._keep_repl, text)
        else:
            out = self._sub_ids(self._ids_repl, text)  # type: ignore[misc]
        if self._action == "drop" and out != text and not out.strip():
            return _DROP
        return out

    def _replace_keep(self, m: Any) -> str:
        if m.start(1) >= 0:
            return m.group(0)
        return self._replace(m)

    def _replace(self, m: Any) -> str:
        action = self._action
        if action == "drop":
            return ""
        if action == "mask":
            return MASK
        if HASH_PREFIX in m.string and _inside_hash(m):
            return m.group(0)  # a hash we wrote (all 16 hex digits can look like a number)
        return self._hash(m.group(0))

    def _id_value(self, x: Any) -> Any:
        action = self._action
        if action == "drop":
            return _DROP
        if action == "mask":
            return MASK
        if type(x) is str:
            # Already a hash (an event redacted twice, a replay): keep it, stay idempotent.
            return x if _HASHED(x) else self._hash(x)
        try:
            text = _encode_sorted(x).decode("utf-8")
        except (TypeError, msgspec.EncodeError):
            return MASK
        return self._hash(text)

    def _hash(self, text: str) -> str:
        h = self._hash_cache.get(text)
        if h is None:
            mac = self._hmac.copy()  # type: ignore[union-attr]
            mac.update(text.encode("utf-8", "surrogatepass"))
            h = HASH_PREFIX + mac.hexdigest()[:HASH_HEX_CHARS]
            if len(text) <= CACHE_ITEM_MAX:
                if len(self._hash_cache) >= _CACHE_MAX:
                    self._hash_cache.clear()
                self._hash_cache[text] = h
        return h


def _inside_hash(m: Any) -> bool:
    """Whether match ``m`` lies within an ``h:`` + 16 hex token: redacting twice is a no-op."""
    start, end = m.span()
    span = len(HASH_PREFIX) + HASH_HEX_CHARS
    for token in _HASH_TOKEN.finditer(m.string, max(0, start - span), end + span):
        if token.start() <= start and end <= token.end():
            return True
    return False


def compile_policy(
    raw: dict[str, Any] | None, *, source: str = "<config>", base: Redactor | None = None
) -> Redactor:
    """Check a ``[redaction]`` table and compile it into a :class:`Redactor`.

    ``raw`` None or empty: ``DEFAULT_POLICY`` (or ``base`` itself for a sink without an
    override). With ``base`` (the root policy), ``raw`` is a sink's override: keys it
    leaves out are inherited, and it may only be stricter unless ``allow_looser = true``.
    Raises :class:`~auditshipd.errors.ConfigError` with ``key="redaction.<key>"``.
    """
    if not raw:
        return base if base is not None else DEFAULT_POLICY
    return Redactor(parse_policy(raw, source=source, base=base.policy if base else None))


DEFAULT_POLICY: Redactor = Redactor(parse_policy(DEFAULT_RAW, source="<default redaction policy>"))
