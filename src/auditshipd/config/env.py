"""Reading a TOML document: decoding it and expanding ``${ENV}`` references.

``${VAR}`` and ``${VAR:-default}`` are replaced in every string value; ``$${`` stands
for a literal ``${``. An unset variable without a default is a ConfigError naming the
file and the key; the value is never echoed.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["interpolate", "load_document"]


def load_document(text: str, source: str) -> dict[str, Any]:
    """TOML ``text`` decoded, with ``${ENV}`` references expanded."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=source) from None
    return interpolate(data, source, "")  # type: ignore[no-any-return]


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, source: str, key: str) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; ``$${`` escapes."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {name} is not set", file=source, key=key or None
            )

        parts = value.split("$${")
        return "${".join(_ENV_RE.sub(sub, p) for p in parts)
    if isinstance(value, dict):
        return {
            k: interpolate(v, source, f"{key}.{k}" if key else k) for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    return value
