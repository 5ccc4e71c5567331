"""The errors of a ``${...}`` reference (:mod:`auditshipd.config.env`), told apart from
the others: the value left in place of such a reference (a placeholder, or nothing for
a malformed one) is not what the file says, so no other error is reported for its key
(:func:`auditshipd.config.collect.raise_all`)."""

from __future__ import annotations

import re

from ..errors import ConfigError

__all__ = ["MALFORMED", "is_reference_error", "unset"]

MALFORMED = ("malformed ${...} reference: write ${NAME} or ${NAME:-default} (NAME: letters,"
             " digits and '_'; a default cannot hold another reference; $${ is a literal ${)")
_UNSET_RE = re.compile(r"^environment variable [A-Za-z_][A-Za-z0-9_]* is not set$")


def unset(name: str) -> str:
    """The reason of an error for the unset variable ``name``."""
    return f"environment variable {name} is not set"


def is_reference_error(exc: ConfigError) -> bool:
    """``exc`` is about a malformed or unset ``${...}`` reference."""
    return exc.reason == MALFORMED or bool(_UNSET_RE.match(exc.reason))
