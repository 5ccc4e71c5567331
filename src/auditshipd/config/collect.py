"""Finding every problem of a configuration in one pass, not only the first.

:func:`convert_all` converts a table and, on an error, notes it, drops the key at fault
and tries again, so one table yields all its key and type errors. :func:`did_you_mean`
names the closest known key of a misspelt one; :func:`with_lines` adds the line of the
key where the source text names it unambiguously. Messages name keys, never values.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Iterable
from typing import Any

import msgspec
import msgspec.inspect as mi

from ..errors import ConfigError, ConfigErrors
from .options import type_info
from .references import is_reference_error
from .tables import explain

__all__ = ["convert_all", "did_you_mean", "known_keys", "non_finite", "raise_all", "with_lines"]

_MAX_ERRORS = 100
_STRUCTS = (mi.StructType, mi.DataclassType, mi.TypedDictType)
_SEQUENCES = (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """`` (did you mean 'max_events'?)`` for a key close to a known one, else ``""``."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unwrap(info: Any) -> Any:
    if isinstance(info, mi.UnionType):
        shaped = [t for t in info.types if isinstance(t, (*_STRUCTS, mi.DictType, *_SEQUENCES))]
        return shaped[0] if len(shaped) == 1 else info
    return info


def known_keys(typ: Any, parts: list[str | int]) -> list[str]:
    """The keys the table at ``parts`` (inside a ``typ`` value) may have."""
    info = _unwrap(type_info(typ))
    for p in parts:
        if isinstance(p, int):
            info = info.item_type if isinstance(info, _SEQUENCES) else None
        elif isinstance(info, _STRUCTS):
            info = next((f.type for f in info.fields if f.encode_name == p), None)
        elif isinstance(info, mi.DictType):
            info = info.value_type
        else:
            return []
        info = _unwrap(info)
    return [f.encode_name for f in info.fields] if isinstance(info, _STRUCTS) else []


def _drop(data: Any, parts: list[str | int]) -> bool:
    """Remove the key at ``parts`` (a list item: the whole list's key) from ``data``."""
    while parts and isinstance(parts[-1], int):
        parts = parts[:-1]
    if not parts:
        return False
    node = data
    for p in parts[:-1]:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(node, dict) and parts[-1] in node:
        del node[parts[-1]]
        return True
    return False


def convert_all(data: dict[str, Any], typ: type, source: str, where: str,
                errors: list[ConfigError], extra_known: Iterable[str] = ()) -> Any:
    """``data`` converted to ``typ``, every key and type error appended to ``errors``
    (a key at fault is left out and the rest converted again). None when nothing
    could be converted. ``extra_known``: more keys the top level may have (for the
    suggestions only)."""
    data = copy.deepcopy(data)
    for _ in range(_MAX_ERRORS):
        try:
            return msgspec.convert(data, typ, str_keys=True)
        except msgspec.ValidationError as exc:
            msg, key, parts = explain(exc, where)
            if msg == "unknown key" and parts and isinstance(parts[-1], str):
                known = known_keys(typ, parts[:-1])
                if len(parts) == 1:
                    known = [*known, *extra_known]
                msg += did_you_mean(parts[-1], known)
            errors.append(ConfigError(msg, file=source, key=key or None))
            if msg == "missing required key" or not _drop(data, parts):
                return None
    return None


def non_finite(value: Any, source: str, where: str) -> list[ConfigError]:
    """An error for every float in ``value`` (a converted table: Structs, lists, dicts)
    that is NaN or infinite: TOML allows ``nan`` and ``inf``, which pass every ``<= 0``
    check and make a timer never fire."""
    found: list[ConfigError] = []
    if isinstance(value, float):
        if not math.isfinite(value):
            found.append(ConfigError("must be a finite number", file=source, key=where or None))
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            found += non_finite(getattr(value, name), source, f"{where}.{name}".lstrip("."))
    elif isinstance(value, dict):
        for k, v in value.items():
            found += non_finite(v, source, f"{where}.{k}".lstrip("."))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found += non_finite(v, source, f"{where}[{i}]")
    return found


_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")


def _regions(lines: list[str]) -> dict[str, tuple[int, int]]:
    """``sinks[i]`` -> its line range (the i-th ``[[sinks]]`` and its sub-tables)."""
    out: dict[str, tuple[int, int]] = {}
    start: int | None = None
    count = 0
    for n, line in enumerate(lines):
        m = _HEADER_RE.match(line)
        if not m:
            continue
        name = m.group(1).strip("\"'")
        if line.lstrip().startswith("[[") and name == "sinks":
            if start is not None:
                out[f"sinks[{count - 1}]"] = (start, n)
            start, count = n, count + 1
        elif start is not None and not name.startswith("sinks."):
            out[f"sinks[{count - 1}]"] = (start, n)
            start = None
    if start is not None:
        out[f"sinks[{count - 1}]"] = (start, len(lines))
    return out


def _table_name(line: str) -> str | None:
    """The table a ``[table]`` header line opens (``[ "a" . b ]`` -> ``a.b``); None for
    another line and for an ``[[array]]`` header."""
    m = _HEADER_RE.match(line)
    if not m or line.lstrip().startswith("[["):
        return None
    return ".".join(p.strip().strip("\"'") for p in m.group(1).split("."))


def _table_region(lines: list[str], lo: int, hi: int, table: str) -> tuple[int, int] | None:
    """The lines of ``[table]`` within ``lo:hi``: its header up to the next header."""
    for n in range(lo, hi):
        if _table_name(lines[n]) == table:
            end = next((k for k in range(n + 1, hi) if _HEADER_RE.match(lines[k])), hi)
            return n, end
    return None


def _key_region(lines: list[str], lo: int, hi: int, prefix: str,
                tables: list[str]) -> tuple[int, int] | None:
    """The region of the innermost table of ``tables`` (``["batch"]``: ``[prefix.batch]``,
    ``["a", "b"]``: ``[a.b]``, else ``[a]``) that has a header within ``lo:hi``."""
    for j in range(len(tables), 0, -1):
        region = _table_region(lines, lo, hi, ".".join([*([prefix] if prefix else []),
                                                        *tables[:j]]))
        if region is not None:
            return region
    return None


def _line_of(key: str, reason: str, lines: list[str],
             regions: dict[str, tuple[int, int]]) -> int | None:
    """The line of ``key`` in ``lines``, found once within its own table (a sink's
    ``[[sinks]]`` and sub-tables, ``[table]`` or ``[table.sub]``); for a missing key,
    the header of the table that lacks it."""
    m = re.match(r"(sinks\[\d+\])(?: \([^)]*\))?", key)
    if m and m.group(1) not in regions:
        return None
    lo, hi = regions[m.group(1)] if m else (0, len(lines))
    rest = key[m.end():] if m else key
    parts = [p for p in re.sub(r"\[\d+\]", "", rest).split(".") if p]
    if not parts:  # the sink as a whole: its [[sinks]] line
        return lo + 1 if m else None
    last, tables = parts[-1], parts[:-1]
    if tables:
        region = _key_region(lines, lo, hi, "sinks" if m else "", tables)
    else:  # a key of the sink or of the top level itself: before their first sub-table
        first = lo + 1 if m else lo
        region = lo, next((k for k in range(first, hi) if _HEADER_RE.match(lines[k])), hi)
    if reason == "missing required key":  # not in the file: the table that lacks it
        if region is not None and (tables or m):
            return region[0] + 1
        return lo + 1 if m else None
    pat = re.compile(rf"(?:^|[{{,.])\s*[\"']?{re.escape(last)}[\"']?\s*=|^\s*\[+[^\]]*\b{re.escape(last)}\s*\]")
    for a, b in ([region] if region else []) + [(lo, hi)]:
        hits = [n for n in range(a, b) if pat.search(lines[n].split("#", 1)[0])]
        if hits:
            return hits[0] + 1 if len(hits) == 1 else None
    return None


def with_lines(errors: list[ConfigError], text: str | None, source: str) -> list[ConfigError]:
    """``errors`` with the line of their key in ``text`` (the file ``source``) where it
    is found exactly once."""
    if text is None:
        return errors
    lines = text.splitlines()
    regions = _regions(lines)
    out = []
    for e in errors:
        line = e.line
        if line is None and e.key and e.file == source:
            line = _line_of(e.key, e.reason, lines, regions)
        out.append(e if line == e.line else
                   ConfigError(e.reason, file=e.file, key=e.key, line=line))
    return out


def _without_echoes(errors: list[ConfigError]) -> list[ConfigError]:
    """``errors`` less those about a value a ``${...}`` error already stands for (the
    same key, or the list holding it): that value is not what the file says (a
    placeholder, or nothing for a malformed reference), so a second error would be
    about text nobody wrote."""
    refs = {e.key for e in errors if e.key and is_reference_error(e)}
    if not refs:
        return errors
    return [e for e in errors if is_reference_error(e) or not e.key or not any(
        k == e.key or k.startswith(e.key + "[") for k in refs)]


def raise_all(errors: list[ConfigError], text: str | None, source: str) -> None:
    """Raise ``errors`` (with lines): the one error itself, or :class:`ConfigErrors`."""
    if not errors:
        return
    errors = with_lines(_without_echoes(errors), text, source)
    if len(errors) == 1:
        raise errors[0]
    raise ConfigErrors(errors)
