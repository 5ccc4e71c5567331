"""Allowlist paths (``actor.email``, ``targets[].email``, ``metadata.*``) and the plan
tree built from them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .defaults import ABSENT, ALWAYS_KEPT

__all__ = ["hidden_key", "path_covered"]


_SEGMENT_RE = re.compile(r"^(\*|[^.\[\]*]+)((?:\[\])*)$")


# A parsed path is a tuple of steps: a key name, "*" (any key) or "[]" (each element).
Path = tuple[str, ...]


def _parse_path(path: str, source: str, key: str) -> Path:
    steps: list[str] = []
    if not path or path != path.strip():
        raise ConfigError(
            f"invalid path {path!r}: empty or surrounded by spaces", file=source, key=f"redaction.{key}"
        )
    for seg in path.split("."):
        m = _SEGMENT_RE.match(seg)
        if not m:
            raise ConfigError(
                f"invalid path {path!r}: segment {seg!r} must be a key name, '*', "
                "either followed by '[]' for list elements (e.g. targets[].email)",
                file=source, key=f"redaction.{key}",
            )
        steps.append(m.group(1))
        steps.extend("[]" for _ in range(len(m.group(2)) // 2))
    if steps[0] in ALWAYS_KEPT and len(steps) > 1:
        raise ConfigError(
            f"invalid path {path!r}: {steps[0]!r} is always kept whole", file=source,
            key=f"redaction.{key}",
        )
    return tuple(steps)


def path_covered(path: Path, by: list[Path]) -> bool:
    """True when every value ``path`` lets out is also let out by one path of ``by``."""
    for q in by:
        if len(q) > len(path):
            continue
        if all(a == b or (b == "*" and a != "[]") for a, b in zip(path[: len(q)], q, strict=True)):
            return True
    return False


def hidden_key(path: Path, by: list[Path], key_ok: Callable[[str], bool]) -> tuple[str, int] | None:
    """For a path :func:`path_covered` by ``by``: None when a path of ``by`` lets its
    keys out by name; else ``(key, i)``, the first key of ``path`` that ``by[i]`` (the
    first covering path) reaches only through ``*`` or free-form data, where the key is
    checked by name and ``key_ok(key)`` is False (an id-named key: the root drops, masks
    or hashes its value, an explicit path would let it out as it is)."""
    found: tuple[str, int] | None = None
    for i, q in enumerate(by):
        if not path_covered(path, [q]):
            continue
        bad = next((a for j, a in enumerate(path)
                    if a not in ("*", "[]") and (j >= len(q) or q[j] == "*") and not key_ok(a)), None)
        if bad is None:
            return None
        found = found or (bad, i)
    return found


class _Tree:
    __slots__ = ("leaf", "children", "wildcard", "element")

    def __init__(self) -> None:
        self.leaf = False
        self.children: dict[str, _Tree] = {}
        self.wildcard: _Tree | None = None
        self.element: _Tree | None = None

    def add(self, steps: Path) -> None:
        node = self
        for step in steps:
            if node.leaf:
                return
            if step == "[]":
                node.element = node.element or _Tree()
                node = node.element
            elif step == "*":
                node.wildcard = node.wildcard or _Tree()
                node = node.wildcard
            else:
                node = node.children.setdefault(step, _Tree())
        node.leaf = True

    def merge(self, other: _Tree) -> _Tree:
        out = _Tree()
        out.leaf = self.leaf or other.leaf
        if out.leaf:
            return out
        for k in {**self.children, **other.children}:
            a, b = self.children.get(k), other.children.get(k)
            out.children[k] = a.merge(b) if a and b else (a or b)  # type: ignore[union-attr,assignment]
        for name in ("wildcard", "element"):
            a, b = getattr(self, name), getattr(other, name)
            setattr(out, name, a.merge(b) if a and b else (a or b))
        return out

    def freeze(self) -> Any:
        if self.leaf:
            return None
        wildcard = self.wildcard.freeze() if self.wildcard else ABSENT
        children = {}
        for k, child in self.children.items():
            # An explicit key is also matched by "*": it gets the union of both.
            merged = child.merge(self.wildcard) if self.wildcard else child
            children[k] = merged.freeze()
        element = self.element.freeze() if self.element else ABSENT
        return (tuple(children.items()), children, wildcard, element)


def _build_plan(paths: list[Path]) -> Any:
    root = _Tree()
    for steps in paths:
        if steps[0] in ALWAYS_KEPT:  # kept anyway, by the runtime
            continue
        root.add(steps)
    if root.leaf:  # pragma: no cover - a root path cannot be empty
        root = _Tree()
    plan = root.freeze()
    if plan is None:  # pragma: no cover
        raise AssertionError("root plan cannot be a leaf")
    return plan
