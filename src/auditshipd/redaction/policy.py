"""Read and check a ``[redaction]`` policy table; build the allowlist tree.

The table's keys and their types are :class:`~auditshipd.config.RedactionConfig`'s; this
module checks what they mean and turns the table into a :class:`Policy`: every value checked, every
regex compiled once, the allowlist merged into a tree of plain tuples that
:mod:`auditshipd.redaction.redactor` walks together with each event. Nothing here runs per event.

Errors are :class:`~auditshipd.errors.ConfigError` with ``key="redaction.<key>"``. The
hash key is never put in a message, a repr or a log line.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..config.tables import RedactionConfig
from ..errors import ConfigError
from .defaults import (
    _GUARD,
    _PREFILTER,
    _PREFILTER_LEN,
    _STRENGTH,
    ACTIONS,
    ALWAYS_KEPT,
    DEFAULT_ID_VALUE_PATTERNS,
    DEFAULT_RAW,
    MIN_HASH_KEY_CHARS,
)
from .paths import _build_plan, _parse_path, hidden_key, path_covered

try:  # Python >= 3.11
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse  # type: ignore[no-redef]

__all__ = ["CACHE_ITEM_MAX", "Policy", "normalize_key", "normalize_pattern", "parse_policy"]

# No redaction cache (key kinds, hashes, strings found clean; in Python and in the C tier)
# holds a key or text longer than this: with their entry caps, each cache then stays within
# a few MiB whatever the input (distinct 256 KiB metadata keys would otherwise pin
# gigabytes). A longer one is classified again each time it recurs.
CACHE_ITEM_MAX = 256


_KNOWN_KEYS = RedactionConfig.__struct_fields__

# Word boundaries of a camelCase key: lower to upper ("userId"), and the end of an acronym
# ("HTTPServer"), but not an acronym's plural ("userIDs" is "user_ids", not "user_i_ds").
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])(?![A-Z]s(?![a-z]))")
_SEP_RE = re.compile(r"[\s.\-]+")


def normalize_key(key: str) -> str:
    """``userId``, ``user-id``, ``User ID``, ``user_id `` -> ``user_id``, ``userIDs`` ->
    ``user_ids``: the form key globs are matched on."""
    return _SEP_RE.sub("_", _CAMEL_RE.sub("_", key.strip())).lower()


# A set of a glob ("[0-9]", "[!a-z]", "[]x]"), as fnmatch reads it; an unclosed "[" is a
# literal character.
_GLOB_SET_RE = re.compile(r"\[!?\]?[^\]]*\]")


def normalize_pattern(pattern: str) -> str:
    """An ``id_key_patterns`` glob in the form keys are matched on: :func:`normalize_key`
    outside its sets, only lower-cased inside them (``ref[0-9]`` stays a range: its "-"
    is not a separator)."""
    sets = _GLOB_SET_RE.findall(pattern)
    if not sets:
        return normalize_key(pattern)
    # Each set stands in for a character that normalize_key leaves as it is (no letter,
    # digit or separator) and that the pattern does not hold.
    mark = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in pattern)
    out = normalize_key(_GLOB_SET_RE.sub(mark, pattern))
    for glob_set in sets:
        out = out.replace(mark, glob_set.lower(), 1)
    return out


@dataclass(frozen=True)
class Policy:
    """A checked policy. ``plan`` is the allowlist tree the runtime walks.

    A plan node is ``None`` (free-form: keep it, scanning keys and values) or a tuple
    ``(items, children, wildcard, element)``: explicit keys as ``((key, node), ...)``
    and as a dict, the node for any other key (``ABSENT``: none) and the node for the
    elements of a list (``ABSENT``: not a list).
    """

    source: str
    allow: tuple[str, ...]
    action: str
    id_key_patterns: tuple[str, ...]
    id_value_patterns: tuple[str, ...]
    keep_value_patterns: tuple[str, ...]
    hash_key_env: str | None
    plan: Any = field(repr=False, compare=False)
    key_matcher: re.Pattern[str] | None = field(repr=False, compare=False)
    id_regex: re.Pattern[str] | None = field(repr=False, compare=False)
    keep_id_regex: re.Pattern[str] | None = field(repr=False, compare=False)
    prefilter: re.Pattern[str] | None = field(repr=False, compare=False, default=None)
    min_id_len: int = field(repr=False, compare=False, default=0)
    hash_key: bytes | None = field(repr=False, compare=False, default=None)

    def __repr__(self) -> str:  # the dataclass one would be fine; this one is explicit
        return (
            f"Policy(source={self.source!r}, action={self.action!r}, allow={list(self.allow)!r}, "
            f"hash_key={'<set>' if self.hash_key else None})"
        )


def parse_policy(
    raw: RedactionConfig | dict[str, Any] | None, *, source: str, base: Policy | None = None,
    may_loosen: bool = True,
) -> Policy:
    """Check ``raw`` (a typed table from the config file, or a plain one) and build a
    :class:`Policy`.

    Keys that ``raw`` leaves out come from ``base`` (a sink override) or from the
    defaults (the root table). With ``base``, the result must be at least as strict as
    ``base`` unless ``raw`` says ``allow_looser = true``; ``may_loosen`` False (a stream
    file's sink, which may not say it) leaves that way out of the errors.
    """
    raw = raw.table() if isinstance(raw, RedactionConfig) else dict(raw or {})
    for key in raw:
        if key not in _KNOWN_KEYS:
            raise ConfigError(
                f"unknown key (known: {', '.join(sorted(_KNOWN_KEYS))})",
                file=source, key=f"redaction.{key}",
            )
    allow_looser = raw.pop("allow_looser", False)
    if not isinstance(allow_looser, bool):
        raise ConfigError("must be true or false", file=source, key="redaction.allow_looser")
    if allow_looser and base is None:
        raise ConfigError(
            "only valid in a sink's redaction table (it lets that sink be looser than [redaction])",
            file=source, key="redaction.allow_looser",
        )

    if base is not None:
        inherited: dict[str, Any] = {
            "allow": list(base.allow),
            "action": base.action,
            "id_key_patterns": list(base.id_key_patterns),
            "id_value_patterns": list(base.id_value_patterns),
            "keep_value_patterns": list(base.keep_value_patterns),
        }
    else:
        inherited = {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULT_RAW.items()}

    allow = _str_list(raw.get("allow", inherited["allow"]), source, "allow")
    if not allow:
        raise ConfigError(
            "the allowlist is empty, so nothing but id/action/occurred_at/version would leave; "
            'list the fields that may leave, e.g. allow = ["actor.email", "metadata.*"]',
            file=source, key="redaction.allow",
        )
    parsed_paths = [_parse_path(p, source, f"allow[{i}]") for i, p in enumerate(allow)]

    action = raw.get("action", inherited["action"])
    if not isinstance(action, str) or action not in ACTIONS:
        shown = repr(action) if isinstance(action, str) else f"a {type(action).__name__}"
        raise ConfigError(
            f"unknown action {shown} (expected one of: drop, mask, hash)",
            file=source, key="redaction.action",
        )

    key_patterns = _str_list(
        raw.get("id_key_patterns", inherited["id_key_patterns"]), source, "id_key_patterns"
    )
    for i, pat in enumerate(key_patterns):
        if not pat.strip():
            raise ConfigError("empty glob pattern", file=source, key=f"redaction.id_key_patterns[{i}]")
    key_patterns = [normalize_pattern(p) for p in key_patterns]

    value_patterns = _str_list(
        raw.get("id_value_patterns", inherited["id_value_patterns"]), source, "id_value_patterns"
    )
    keep_patterns = _str_list(
        raw.get("keep_value_patterns", inherited["keep_value_patterns"]), source, "keep_value_patterns"
    )
    widths = [_check_regex(p, source, f"id_value_patterns[{i}]") for i, p in enumerate(value_patterns)]
    for i, p in enumerate(keep_patterns):
        _check_regex(p, source, f"keep_value_patterns[{i}]")

    hash_key, hash_key_env = _hash_key(raw, source, base)
    if action == "hash" and hash_key is None:
        raise ConfigError(
            'action "hash" needs a key: set hash_key_env to the name of an environment variable '
            "holding a secret (or hash_key to the secret itself)",
            file=source, key="redaction.hash_key",
        )

    if base is not None and not allow_looser:
        _check_stricter(base, allow, action, key_patterns, value_patterns, keep_patterns, source,
                        _LOOSER_HINT if may_loosen else "")

    prefilter = bool(value_patterns) and set(value_patterns) <= set(DEFAULT_ID_VALUE_PATTERNS)
    ids_alt = "|".join(f"(?:{p})" for p in value_patterns)
    if prefilter:
        ids_alt = f"{_GUARD}(?:{ids_alt})"
    id_regex = re.compile(ids_alt) if value_patterns else None
    keep_id_regex = None
    if value_patterns and keep_patterns:
        keep_alt = "|".join(f"(?:{p})" for p in keep_patterns)
        # Group 1 is "keep"; the runtime leaves those matches as they are.
        keep_id_regex = re.compile(f"({keep_alt})|{ids_alt}")
    key_matcher = (
        re.compile("|".join(fnmatch.translate(p) for p in key_patterns)) if key_patterns else None
    )
    return Policy(
        source=source,
        allow=tuple(allow),
        action=action,
        id_key_patterns=tuple(key_patterns),
        id_value_patterns=tuple(value_patterns),
        keep_value_patterns=tuple(keep_patterns),
        hash_key_env=hash_key_env,
        plan=_build_plan(parsed_paths),
        key_matcher=key_matcher,
        id_regex=id_regex,
        keep_id_regex=keep_id_regex,
        prefilter=re.compile(_PREFILTER) if prefilter else None,
        min_id_len=_PREFILTER_LEN if prefilter else min(widths, default=0),
        hash_key=hash_key,
    )


# -- checks --------------------------------------------------------------------------


def _str_list(value: Any, source: str, key: str) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(
            f"must be a list of strings, got {type(value).__name__}", file=source, key=f"redaction.{key}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(
                f"must be a string, got {type(item).__name__}", file=source, key=f"redaction.{key}[{i}]"
            )
    return list(value)


def _check_regex(pattern: str, source: str, key: str) -> int:
    """Compile ``pattern`` alone (so the error names it); return its minimum match length."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ConfigError(
            f"invalid regex {pattern!r}: {exc.msg}{where}", file=source, key=f"redaction.{key}"
        ) from None
    if compiled.search("") is not None:
        raise ConfigError(
            f"regex {pattern!r} matches the empty string, so it would match everywhere; "
            "make it require at least one character",
            file=source, key=f"redaction.{key}",
        )
    try:
        return int(_sre_parse.parse(pattern).getwidth()[0])
    except Exception:  # pragma: no cover - private API changed: no length shortcut
        return 0


def _hash_key(raw: dict[str, Any], source: str, base: Policy | None) -> tuple[bytes | None, str | None]:
    has_key, has_env = "hash_key" in raw, "hash_key_env" in raw
    if has_key and has_env:
        raise ConfigError(
            "set only one of hash_key and hash_key_env", file=source, key="redaction.hash_key"
        )
    if has_key:
        value = raw["hash_key"]
        if not isinstance(value, str):
            raise ConfigError("must be a string", file=source, key="redaction.hash_key")
        if len(value) < MIN_HASH_KEY_CHARS:
            raise ConfigError(
                f"too short: use at least {MIN_HASH_KEY_CHARS} random characters "
                "(for example `openssl rand -hex 32`)",
                file=source, key="redaction.hash_key",
            )
        return value.encode("utf-8"), None
    if has_env:
        name = raw["hash_key_env"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(
                "must be the name of an environment variable", file=source, key="redaction.hash_key_env"
            )
        value = os.environ.get(name, "")
        if not value:
            raise ConfigError(
                f"environment variable {name} is not set or empty", file=source,
                key="redaction.hash_key_env",
            )
        if len(value) < MIN_HASH_KEY_CHARS:
            raise ConfigError(
                f"environment variable {name} is too short: use at least {MIN_HASH_KEY_CHARS} "
                "random characters", file=source, key="redaction.hash_key_env",
            )
        return value.encode("utf-8"), name
    if base is not None:
        return base.hash_key, base.hash_key_env
    return None, None


# How a sink of the main config may still be looser; a stream file's sink may not.
_LOOSER_HINT = " (or set allow_looser = true in this sink's redaction table to permit it)"


def _check_stricter(
    base: Policy,
    allow: list[str],
    action: str,
    key_patterns: list[str],
    value_patterns: list[str],
    keep_patterns: list[str],
    source: str,
    hint: str,
) -> None:
    base_paths = [_parse_path(p, source, "allow") for p in base.allow]

    def kept(key: str) -> bool:
        """Whether the root policy keeps ``key`` by name where it checks key names (under
        ``*``, in free-form data): not id-named, and no id found in the name."""
        if base.key_matcher is not None and base.key_matcher.fullmatch(normalize_key(key)):
            return False
        if base.keep_id_regex is not None:
            return all(m.group(1) is not None for m in base.keep_id_regex.finditer(key))
        return base.id_regex is None or base.id_regex.search(key) is None

    for i, p in enumerate(allow):
        steps = _parse_path(p, source, f"allow[{i}]")
        if steps[0] not in ALWAYS_KEPT and not path_covered(steps, base_paths):
            raise ConfigError(
                f"path {p!r} is not allowed by the root [redaction] allowlist; "
                f"a sink may only narrow it{hint}",
                file=source, key=f"redaction.allow[{i}]",
            )
        hidden = None if steps[0] in ALWAYS_KEPT else hidden_key(steps, base_paths, kept)
        if hidden is not None:
            raise ConfigError(
                f"path {p!r} names key {hidden[0]!r}, which the root [redaction] policy treats "
                f"as an id under {base.allow[hidden[1]]!r} (id_key_patterns, id_value_patterns); "
                f"a sink may only narrow it{hint}",
                file=source, key=f"redaction.allow[{i}]",
            )
    if _STRENGTH[action] < _STRENGTH[base.action]:
        raise ConfigError(
            f"action {action!r} hides less than the root policy's {base.action!r} "
            f"(drop > mask > hash){hint}",
            file=source, key="redaction.action",
        )
    for key, mine, theirs in (
        ("id_key_patterns", key_patterns, base.id_key_patterns),
        ("id_value_patterns", value_patterns, base.id_value_patterns),
    ):
        missing = [p for p in theirs if p not in mine]
        if missing:
            raise ConfigError(
                f"leaves out {len(missing)} pattern(s) of the root policy, first {missing[0]!r}; "
                f"a sink may only add patterns{hint}",
                file=source, key=f"redaction.{key}",
            )
    extra = [p for p in keep_patterns if p not in base.keep_value_patterns]
    if extra:
        raise ConfigError(
            f"adds keep pattern {extra[0]!r} that the root policy does not have; "
            f"a sink may only remove keep patterns{hint}",
            file=source, key="redaction.keep_value_patterns",
        )


# -- paths and the plan tree -----------------------------------------------------------


