"""Reading search filters from a request's query string (shared by the API and pages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config.tables import ORGANIZATION_SLUG_RE
from .query import EventFilter, parse_time, query_phrases
from .store import MAX_LIMIT

__all__ = ["TRUE_VALUES", "BadParameter", "OtherOrganization", "parse_filters", "parse_flag",
           "parse_limit"]

MAX_ACTIONS = 50
MAX_VALUE_CHARS = 320


class BadParameter(ValueError):
    """A query parameter that cannot be used; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class OtherOrganization(BadParameter):
    """The request names an organization its token may not see (answered 403)."""

    def __init__(self, scope: str) -> None:
        super().__init__("organization", f"this token sees organization {scope} only")


def _organization(query: Mapping[str, str], scope: str | None) -> str | None:
    """The organization a request narrows to: ``organization=SLUG`` when it names one (a
    token of an organization may name only its own), else the token's."""
    asked = _one(query, "organization")
    if not asked:
        return scope
    if scope is not None and asked != scope:
        raise OtherOrganization(scope)
    if not ORGANIZATION_SLUG_RE.match(asked):
        raise BadParameter("organization", "not an organization slug")
    return asked


def _one(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "")
    if len(value) > MAX_VALUE_CHARS and name != "q":
        raise BadParameter(name, f"at most {MAX_VALUE_CHARS} characters")
    return value.strip()


def parse_filters(query: Any, scope: str | None) -> EventFilter:
    """An :class:`EventFilter` from a MultiDict query (``action`` may repeat); an
    ``organization`` other than the token's is :class:`OtherOrganization`."""
    q = query.get("q", "")
    try:
        query_phrases(q)
    except ValueError as exc:
        raise BadParameter("q", str(exc)) from None
    actions = tuple(dict.fromkeys(a.strip() for a in query.getall("action", []) if a.strip()))
    if len(actions) > MAX_ACTIONS:
        raise BadParameter("action", f"at most {MAX_ACTIONS} actions")
    if any(len(a) > MAX_VALUE_CHARS for a in actions):
        raise BadParameter("action", f"at most {MAX_VALUE_CHARS} characters")
    times = {}
    for name in ("since", "until"):
        raw = _one(query, name)
        if raw:
            try:
                times[name] = parse_time(raw)
            except ValueError:
                raise BadParameter(name, "expected an RFC 3339 time such as 2026-01-31T12:00:00Z") from None
    return EventFilter(
        q=q.strip(),
        include_access=parse_flag(query, "include_access"),
        actions=actions,
        actor=_one(query, "actor"),
        target=_one(query, "target"),
        since=times.get("since"),
        until=times.get("until"),
        organization=_organization(query, scope),
    )


TRUE_VALUES = frozenset({"true", "1", "on", "yes"})
_FALSE = frozenset({"false", "0", "off", "no", ""})


def parse_flag(query: Mapping[str, str], name: str) -> bool:
    """A boolean parameter: ``true``/``1``/``on`` (a checked checkbox) or ``false``/``0``/
    absent; anything else is a :class:`BadParameter` naming it."""
    raw = query.get(name, "").strip().lower()
    if raw in TRUE_VALUES:
        return True
    if raw in _FALSE:
        return False
    raise BadParameter(name, "expected true or false")


def parse_limit(query: Mapping[str, str], default: int = 50) -> int:
    raw = query.get("limit", "")
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):  # int() would take "٣", "5_0", " 7"
        raise BadParameter("limit", "expected an integer")
    limit = int(raw)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadParameter("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit
