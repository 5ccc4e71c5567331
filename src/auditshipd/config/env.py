"""Reading a TOML document: decoding it and expanding ``${ENV}`` references.

``${VAR}`` and ``${VAR:-default}`` are replaced in every string value (the default when
VAR is unset or empty, as in POSIX shells); ``$${`` stands for a literal ``${``. An unset
variable without a default, or a malformed reference (``${SIEM-TOKEN}``, a nested
``${A:-${B}}``), is a ConfigError naming the file, the line and the key; the value is
never echoed. Inside :func:`unset_as_placeholder`
(``check-config --no-env``) an unset variable becomes a placeholder instead, so a config
can be checked where its secrets are not set.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ..errors import ConfigError, ConfigErrors
from .collect import with_lines
from .references import MALFORMED, unset

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["interpolate", "is_placeholder", "load_document", "unset_as_placeholder"]

_PLACEHOLDERS: ContextVar[bool] = ContextVar("auditshipd_env_placeholders", default=False)
_LINE_RE = re.compile(r"\s*\(at line (\d+), column \d+\)$")


@contextmanager
def unset_as_placeholder() -> Iterator[None]:
    """Within: an unset ``${VAR}`` reads as ``unset-var`` (lowercase, ``_`` -> ``-``)
    instead of being an error."""
    token = _PLACEHOLDERS.set(True)
    try:
        yield
    finally:
        _PLACEHOLDERS.reset(token)


def load_document(text: str, source: str,
                  missing: list[ConfigError] | None = None) -> dict[str, Any]:
    """TOML ``text`` decoded, with ``${ENV}`` references expanded. An unset variable is
    raised (all of them), or, with ``missing``, appended to it and read as a placeholder
    so that the rest can still be checked."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _LINE_RE.search(msg)
        raise ConfigError(f"invalid TOML: {msg[: m.start()] if m else msg}", file=source,
                          line=int(m.group(1)) if m else None) from None
    found: list[ConfigError] = []
    data = interpolate(data, source, "", found)
    found = with_lines([_sink_named(e, data) for e in found], text, source)
    if missing is not None:
        missing.extend(found)
    elif len(found) > 1:
        raise ConfigErrors(found)
    elif found:
        raise found[0]
    return data  # type: ignore[no-any-return]


def _sink_named(exc: ConfigError, data: Any) -> ConfigError:
    """``sinks[0].token`` -> ``sinks[0] (siem).token``, as the other sink errors say it."""
    m = re.match(r"sinks\[(\d+)\]", exc.key or "")
    sinks = data.get("sinks") if isinstance(data, dict) else None
    if not m or not isinstance(sinks, list) or int(m.group(1)) >= len(sinks):
        return exc
    table = sinks[int(m.group(1))]
    name = table.get("name") if isinstance(table, dict) else None
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", name):
        return exc
    key = f"{m.group(0)} ({name}){exc.key[m.end():]}"  # type: ignore[index]
    return ConfigError(exc.reason, file=exc.file, key=key, line=exc.line)


def _placeholder(name: str) -> str:
    return "unset-" + name.lower().replace("_", "-")


def is_placeholder(value: str | None) -> bool:
    """``value`` stands for an unset variable (``check-config --no-env``): a check of its
    shape (a SAS token, a base64 key) has nothing to look at."""
    return bool(_PLACEHOLDERS.get() and value and value.startswith("unset-"))


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, source: str, key: str,
                missing: list[ConfigError] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; ``$${`` escapes. An unset
    variable or a malformed reference is raised, or appended to ``missing`` when given."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def report(exc: ConfigError) -> None:
            if missing is None:
                raise exc
            missing.append(exc)

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if os.environ.get(name):
                return os.environ[name]
            if default is not None:  # unset or empty, as in POSIX shells
                return default
            if name in os.environ:
                return ""
            if _PLACEHOLDERS.get():
                return _placeholder(name)
            report(ConfigError(unset(name), file=source, key=key or None))
            return _placeholder(name)

        def expand(part: str) -> str:
            out, pos = [], 0
            while (start := part.find("${", pos)) >= 0:
                out.append(part[pos:start])
                m = _ENV_RE.match(part, start)
                if m is None or "${" in (m.group(2) or ""):
                    # Never kept as literal text (a token "${SIEM-TOKEN}" would be sent as
                    # is); the text itself is not echoed.
                    report(ConfigError(MALFORMED, file=source, key=key or None))
                    return ""
                out.append(sub(m))
                pos = m.end()
            return "".join(out) + part[pos:]

        return "${".join(expand(p) for p in value.split("$${"))
    if isinstance(value, dict):
        return {
            k: interpolate(v, source, f"{key}.{k}" if key else k, missing)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, source, f"{key}[{i}]", missing) for i, v in enumerate(value)]
    return value
