"""Unknown keys in a sink's options table, whatever the plugin declared.

msgspec ignores unknown fields unless a Struct says ``forbid_unknown_fields=True``, and a
plugin author can forget it (on the options class or on a nested one): a misspelled key
would then be dropped silently and the sink would run on a default. The core does not
rely on the flag: it walks the options type (nested Structs, dataclasses, TypedDicts,
lists, dicts and unions of them included) over the table and reports the first key no
field accepts.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import msgspec.inspect as mi

__all__ = ["first_unknown_key", "unknown_keys"]

Found = Iterator[tuple[str, list[str]]]


def first_unknown_key(data: Any, options_type: type) -> str | None:
    """The dotted path (``tls.ca_fle``, ``routes[2].topc``) of the first key of ``data``
    that ``options_type`` has no field for, or None."""
    return next((path for path, _ in unknown_keys(data, options_type)), None)


def unknown_keys(data: Any, options_type: type) -> list[tuple[str, list[str]]]:
    """Every key of ``data`` that ``options_type`` has no field for: its dotted path and
    the keys its table may have."""
    return list(_walk(data, type_info(options_type), ""))


# Per options class, weakly: a reload imports drop-in plugins afresh, and the classes of
# their old generation must be free to go. (A thousand sinks of one type inspect it once.)
_infos: weakref.WeakKeyDictionary[type, mi.Type] = weakref.WeakKeyDictionary()


def type_info(options_type: type) -> mi.Type:
    """``msgspec.inspect.type_info`` of an options class, computed once per class."""
    try:
        return _infos[options_type]
    except (KeyError, TypeError):  # TypeError: not weakly referenceable (a builtin type)
        info = mi.type_info(options_type)
        with contextlib.suppress(TypeError):
            _infos[options_type] = info
        return info


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _walk(value: Any, info: mi.Type, path: str) -> Found:
    if isinstance(info, mi.UnionType):
        yield from _walk_union(value, info, path)
    elif isinstance(value, dict):
        if isinstance(info, (mi.StructType, mi.DataclassType, mi.TypedDictType)):
            yield from _walk_fields(value, info, path)
        elif isinstance(info, mi.DictType):
            for key, item in value.items():
                yield from _walk(item, info.value_type, _join(path, key))
    elif isinstance(value, (list, tuple)):
        if isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
            items: Any = [info.item_type] * len(value)
        elif isinstance(info, mi.TupleType):
            items = info.item_types
        else:
            return
        # A tuple of the wrong length is msgspec's error to report, with its own words.
        for i, (item, item_info) in enumerate(zip(value, items, strict=False)):
            yield from _walk(item, item_info, f"{path}[{i}]")


def _walk_fields(value: dict[Any, Any], info: Any, path: str) -> Found:
    fields = {f.encode_name: f for f in info.fields}
    tag_field = getattr(info, "tag_field", None)
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            if key != tag_field:
                yield _join(path, key), list(fields)
            continue
        yield from _walk(item, field.type, _join(path, key))


def _walk_union(value: Any, info: mi.UnionType, path: str) -> Found:
    if isinstance(value, dict):
        shapes = [t for t in info.types
                  if isinstance(t, (mi.StructType, mi.DataclassType, mi.TypedDictType, mi.DictType))]
        tagged = [t for t in shapes if getattr(t, "tag_field", None)]
        if tagged:
            shapes = [t for t in tagged if value.get(t.tag_field) == t.tag] or shapes[:0]
        if len(shapes) == 1:
            yield from _walk(value, shapes[0], path)
    elif isinstance(value, (list, tuple)):
        seqs = [t for t in info.types if isinstance(
            t, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType, mi.TupleType))]
        if len(seqs) == 1:
            yield from _walk(value, seqs[0], path)
