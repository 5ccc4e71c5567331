"""Newer / Older links of the events page.

The store pages with keyset cursors that only walk towards older events. The page for
"Newer" is the one this page was reached from, so each link carries the cursors of the
pages before it (``prev``, repeated, oldest first); "Newer" pops the last one. The trail
is capped: past ``MAX_TRAIL`` pages, the oldest entries are dropped and "Newer" eventually
leads to the newest page instead of the exact previous one.

The total is counted up to ``TOTAL_CAP`` ("more than 10,000"), so a broad search on a big
index costs what a page of 10,000 rows costs, not a scan of everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import urlencode

from .query import EventFilter
from .store import EventStore

__all__ = ["MAX_TRAIL", "TOTAL_CAP", "PageLinks", "Total", "match_total", "page_links", "valid_trail"]

MAX_TRAIL = 100


class PageLinks(NamedTuple):
    newest: str | None  # shown when "Newer" is not already the newest page
    newer: str | None
    older: str | None


def valid_trail(store: EventStore, values: Sequence[str]) -> list[str]:
    """The ``prev`` cursors that are ``store``'s (others are dropped: they only make links)."""
    return [value for value in values[-MAX_TRAIL:] if store.is_cursor(value)]


def page_links(
    base: str,
    filters: Sequence[tuple[str, str]],
    cursor: str | None,
    trail: Sequence[str],
    next_cursor: str | None,
) -> PageLinks:
    """Links from the page at ``cursor`` (None: the newest page) reached through ``trail``."""

    def url(pairs: list[tuple[str, str]]) -> str:
        query = urlencode(pairs)
        return f"{base}?{query}" if query else base

    pairs = list(filters)
    newest = newer = older = None
    if cursor:
        if trail:
            newer = url(pairs + [("prev", c) for c in trail[:-1]] + [("cursor", trail[-1])])
            newest = url(pairs)
        else:
            newer = url(pairs)
    if next_cursor:
        ahead = [*trail, cursor] if cursor else list(trail)
        older = url(pairs + [("prev", c) for c in ahead[-MAX_TRAIL:]] + [("cursor", next_cursor)])
    return PageLinks(newest, newer, older)


TOTAL_CAP = 10_000


class Total(NamedTuple):
    """How many events match: exactly ``value`` (``relation`` "eq"), or more than
    ``value`` ("gt") when counting stopped at the cap."""

    value: int
    relation: str

    def as_json(self) -> dict[str, object]:
        return {"value": self.value, "relation": self.relation}


async def match_total(store: EventStore, filters: EventFilter, cap: int = TOTAL_CAP) -> Total:
    counted = await store.count_up_to(filters, cap)
    return Total(cap, "gt") if counted > cap else Total(counted, "eq")
