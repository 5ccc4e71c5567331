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
  hashed) wherever they sit in the string, and an integer of 16+ digits whose digits
  are an id gets the action too (so does a float that is such a whole number, as
  ``int(x)`` would). Values matching ``keep_value_patterns``
  (email addresses by default) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ..config.tables import RedactionConfig
from ..errors import DropEvent
from .defaults import ABSENT, DEFAULT_RAW
from .events import TOO_DEEP, check_event, redact_each
from .fastpath import FastPath
from .ids import BIG_INT, DROP, KEY_ID, KEY_OK, MASK, IdRedactor
from .policy import Policy, parse_policy

__all__ = ["DEFAULT_POLICY", "MASK", "Redactor", "compile_policy"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class Redactor:
    """A compiled redaction policy. Call it on an event dict; get a new, redacted dict.

    The walk here is the reference: :attr:`redact_line` (the fused fast path, see
    :mod:`auditshipd.redaction.fastpath`) writes exactly the bytes of
    ``encode(redactor(decode(line)))``. Keys and strings are handled by ``ids`` (an
    :class:`~auditshipd.redaction.ids.IdRedactor`), shared with the fast path.
    """

    __slots__ = ("policy", "ids", "fast_path", "redact_line", "_root_items", "_root_children",
                 "_root_wildcard")

    def __init__(self, policy: Policy, *, c_tier: bool = True) -> None:
        self.policy = policy
        self.ids = IdRedactor(policy)
        self._root_items, self._root_children, self._root_wildcard, root_element = policy.plan
        self.fast_path: FastPath | None = None
        if self._root_wildcard is ABSENT and root_element is ABSENT:
            self.fast_path = FastPath(policy, self.ids, walk=self.walk, fallback=self._slow_line,
                                      c_tier=c_tier)
        # redact_line(line: bytes) -> bytes: one journal line in, the redacted event out as
        # compact JSON bytes, the same bytes as ``encode(self(decode(line)))`` without
        # building the fields the policy drops. Raises ``msgspec.DecodeError`` for invalid
        # JSON or UTF-8, DropEvent when the line is not an object or lacks a required field,
        # or its free-form data is nested too deeply to redact (the reason says which).
        # An attribute, not a method: the daemon calls it once per event, straight into
        # the generated code.
        self.redact_line: Callable[[bytes], bytes] = (
            self.fast_path.redact_line if self.fast_path is not None else self._slow_line
        )

    def __repr__(self) -> str:
        return (
            f"<Redactor {self.policy.source} action={self.policy.action} "
            f"allow={len(self.policy.allow)} paths "
            f"hash_key={'<set>' if self.ids.has_hash_key else 'none'}>"
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
        try:
            if self._root_wildcard is ABSENT:
                self._fill_explicit(self._root_items, event, out)
            else:
                self._fill_wild(self._root_children, self._root_wildcard, event, out, True)
        except RecursionError:
            raise DropEvent(TOO_DEEP) from None
        return out

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
        if not self.ids.has_hash_key:
            raise ValueError("this policy has no hash key")
        return self.ids.hash(text)

    # -- the walk ---------------------------------------------------------------------

    def walk(self, node: Any, value: Any) -> Any:
        """``value`` under the plan ``node`` (see :mod:`auditshipd.redaction.paths`):
        the redacted value, or DROP."""
        if node is None:
            return self.ids.free(value)
        items, children, wildcard, element = node
        t = type(value)
        if t is dict:
            if wildcard is ABSENT:
                if not items:
                    return DROP
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
                item = self.walk(element, item)
                if item is not DROP:
                    append(item)
            return result
        return DROP

    def _fill_explicit(self, items: Any, value: dict[str, Any], out: dict[str, Any]) -> None:
        ids = self.ids
        min_len, search = ids.min_len, ids.search
        for key, node in items:
            if key not in value:
                continue
            x = value[key]
            if node is None:
                t = type(x)
                if t is str:
                    if search is not None and len(x) >= min_len and search(x):
                        x = ids.redact_str(x)
                        if x is DROP:
                            continue
                elif t is dict:
                    x = ids.free_dict(x)
                elif t is list:
                    x = ids.free_list(x)
                elif t is int or t is float:
                    if not -BIG_INT < x < BIG_INT:
                        x = ids.number(x)
                        if x is DROP:
                            continue
                elif not (x is None or t is bool):
                    continue
            else:
                x = self.walk(node, x)
                if x is DROP:
                    continue
            out[key] = x

    def _fill_wild(
        self, children: dict[str, Any], wildcard: Any, value: dict[str, Any], out: dict[str, Any],
        root: bool,
    ) -> None:
        ids = self.ids
        cache = ids.key_cache
        for key, x in value.items():
            node = children.get(key, ABSENT)
            if node is ABSENT:
                if root and key in ("id", "action", "occurred_at", "version"):
                    continue
                kind = cache.get(key)
                if kind is None:
                    kind = ids.classify(key)
                if kind is KEY_ID or type(kind) is tuple:
                    x = ids.id_value(x)
                    if x is not DROP:
                        out[key if kind is KEY_ID else kind[0]] = x
                    continue
                if kind is DROP:
                    continue
                if kind is not KEY_OK:
                    key = kind
                node = wildcard
            x = ids.free(x) if node is None else self.walk(node, x)
            if x is not DROP:
                out[key] = x


def compile_policy(
    raw: RedactionConfig | dict[str, Any] | None, *, source: str = "<config>",
    base: Redactor | None = None, may_loosen: bool = True,
) -> Redactor:
    """Check a ``[redaction]`` table and compile it into a :class:`Redactor`.

    ``raw`` None or empty: ``DEFAULT_POLICY`` (or ``base`` itself for a sink without an
    override). With ``base`` (the root policy), ``raw`` is a sink's override: keys it
    leaves out are inherited, and it may only be stricter unless ``allow_looser = true``
    (``may_loosen`` False: a table that may not say so, whose errors do not suggest it).
    Raises :class:`~auditshipd.errors.ConfigError` with ``key="redaction.<key>"``.
    """
    if isinstance(raw, RedactionConfig):
        raw = raw.table()
    if not raw:
        return base if base is not None else DEFAULT_POLICY
    return Redactor(parse_policy(raw, source=source, base=base.policy if base else None,
                                 may_loosen=may_loosen))


DEFAULT_POLICY: Redactor = Redactor(parse_policy(DEFAULT_RAW, source="<default redaction policy>"))
