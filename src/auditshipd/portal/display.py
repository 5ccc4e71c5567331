"""How the pages show events: one time format, and the summary of an event.

Every time on a page is shown the same way: humanised ("5 min ago", "3 Mar 2026, 14:05")
in a ``<time>`` element whose ``title`` is the exact UTC time, so hovering gives it. The
summary lists who did what to whom with names *and* e-mails, and the metadata, so the JSON
is for copying, not for reading.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from markupsafe import Markup, escape

from ..timestamps import parse_rfc3339

__all__ = ["EventSummary", "Party", "exact_text", "exact_utc", "humanize", "summarize", "time_html"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def exact_utc(when: _dt.datetime) -> str:
    """``2026-01-31 12:00:05.123 UTC`` (fractions only when there are some)."""
    text = when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}".rstrip("0")
    return f"{text} UTC"


def humanize(when: _dt.datetime, now: _dt.datetime | None = None) -> str:
    """Relative within a week ("just now", "5 min ago", "3 h ago", "2 days ago", and
    "in ..." for the future); beyond, the UTC date and minute."""
    now = now or _utc_now()
    seconds = (now - when).total_seconds()
    ahead = seconds < 0
    span = abs(seconds)
    if span < 45:
        return "just now"
    if span < 90 * 60:
        amount = f"{max(1, round(span / 60))} min"
    elif span < 24 * 3600:
        amount = f"{round(span / 3600)} h"
    elif span < 7 * 86400:
        days = round(span / 86400)
        if days == 1:
            return "tomorrow" if ahead else "yesterday"
        amount = f"{days} days"
    else:
        utc = when.astimezone(_dt.timezone.utc)
        return f"{utc.day} {_MONTHS[utc.month - 1]} {utc.year}, {utc:%H:%M}"
    return f"in {amount}" if ahead else f"{amount} ago"


def exact_text(value: Any) -> str:
    """The exact UTC time of an RFC 3339 string, or the text itself when it is not one."""
    when = parse_rfc3339(str(value)) if value else None
    return exact_utc(when) if when is not None else str(value or "")


def time_html(value: Any, now: _dt.datetime | None = None) -> Markup:
    """A ``<time>`` element for an RFC 3339 string; text that is not a time is shown as
    it is (escaped), and nothing at all as an em dash."""
    if not value:
        return Markup("—")
    when = parse_rfc3339(str(value))
    if when is None:
        return escape(str(value))
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        when.isoformat().replace("+00:00", "Z"), exact_utc(when), humanize(when, now)
    )


class Party(NamedTuple):
    """An actor or target as shown: ``label`` is the name, else the e-mail, else the id
    or type; ``detail`` the e-mail when the label is a name, and the type."""

    label: str
    email: str
    kind: str
    id: str

    @property
    def detail(self) -> str:
        parts = [self.email] if self.email and self.email != self.label else []
        if self.kind:
            parts.append(self.kind)
        return " · ".join(parts)


def _party(value: Any) -> Party | None:
    if not isinstance(value, Mapping):
        return None
    name, email = str(value.get("name") or ""), str(value.get("email") or "")
    kind, ident = str(value.get("type") or ""), str(value.get("id") or "")
    label = name or email or ident or kind
    return Party(label, email, kind, ident) if label else None


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class EventSummary(NamedTuple):
    """What the list and the event page show of one event."""

    id: str
    occurred_at: str
    action: str
    actor: Party | None
    targets: list[Party]
    organization: str
    location: str
    user_agent: str
    metadata: list[tuple[str, str]]


def summarize(event: Mapping[str, Any]) -> EventSummary:
    targets = event.get("targets") if isinstance(event.get("targets"), list) else []
    org = event.get("organization") if isinstance(event.get("organization"), Mapping) else {}
    context = event.get("context") if isinstance(event.get("context"), Mapping) else {}
    metadata = event.get("metadata") if isinstance(event.get("metadata"), Mapping) else {}
    return EventSummary(
        id=str(event.get("id", "")),
        occurred_at=str(event.get("occurred_at", "")),
        action=str(event.get("action", "")),
        actor=_party(event.get("actor")),
        targets=[p for p in map(_party, targets) if p is not None],
        organization=str(org.get("slug") or ""),
        location=str(context.get("location") or ""),
        user_agent=str(context.get("user_agent") or ""),
        metadata=[(str(k), _value_text(v)) for k, v in metadata.items()],
    )
