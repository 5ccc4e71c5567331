"""Test data of the portal tests: a deterministic event generator and an independent
Python oracle of the search semantics."""

from __future__ import annotations

import datetime as dt
import random
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

ACTIONS = [
    "user.created", "user.deleted", "user.login", "user.logout", "role.granted",
    "role.revoked", "api_key.created", "api_key.revoked", "document.viewed",
    "document.exported", "settings.changed", "billing.updated",
]
ORGS = ["acme", "globex", "initech", "umbrella"]
FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter"]
LAST = ["smith", "jones", "obrien", "garcia", "chen", "novak", "silva", "kowalski", "meyer"]
WORDS = ["quarterly", "report", "invoice", "payroll", "roadmap", "alpha", "beta", "gamma",
         "delta", "sso", "saml", "okta", "ldap", "sandbox", "production", "staging", "legal",
         "hold", "retention", "export", "<script>alert(1)</script>", "O'Brien", "1=1", "NEAR"]
BASE_TIME = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
SEED_EVENTS = 100_000


def _person(rng: random.Random) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    org = rng.choice(ORGS)
    return {"type": "user", "email": f"{first}.{last}@{org}.example", "name": f"{first.title()} {last.title()}"}


def make_events(n: int, seed: int = 5, start: int = 0, span_days: int = 60) -> list[dict[str, Any]]:
    """``n`` redacted-looking events with ids ``evt_<start+i>``; times in ``span_days``
    days from 2026-01-01, millisecond precision, with deliberate duplicates."""
    rng = random.Random(seed)
    events = []
    for i in range(start, start + n):
        if rng.random() < 0.05 and events:
            occurred = events[-1]["occurred_at"]
        else:
            ms = rng.randrange(span_days * 86_400_000)
            t = BASE_TIME + dt.timedelta(milliseconds=ms)
            occurred = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
        actor = {"type": "system", "name": "scheduler"} if rng.random() < 0.03 else _person(rng)
        event: dict[str, Any] = {
            "id": f"evt_{i:07d}",
            "action": rng.choice(ACTIONS),
            "occurred_at": occurred,
            "version": 1,
            "organization": {"slug": rng.choice(ORGS)},
            "actor": actor,
            "targets": [_person(rng) for _ in range(rng.choice([0, 1, 1, 2]))],
            "context": {"location": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"},
            "metadata": {"note": " ".join(rng.sample(WORDS, 2)), "count": rng.randrange(100)},
        }
        events.append(event)
    return events


# -- the oracle: written independently of the store's SQL ----------------------------

# What FTS5's unicode61 tokenizer (remove_diacritics=1) makes of text whose accented
# letters are Latin letters with one accent: words are runs of letters and digits, lower
# case, any length; an accent it folds (these 25 combining marks, alone or as the
# decomposition of a precomposed letter) belongs to its word and is left out.
_FOLDED_ACCENTS = frozenset([*range(0x300, 0x305), *range(0x306, 0x30D), 0x30F, 0x311, 0x31B,
                             *range(0x323, 0x329), 0x32D, 0x32E, 0x330, 0x331])


def _toks(text: str) -> list[str]:
    if text.isascii():
        return re.findall("[a-z0-9]+", text.lower())
    words: list[str] = []
    word: list[str] = []
    for ch in unicodedata.normalize("NFD", text.lower()):
        if ch.isalnum():
            word.append(ch)
        elif word and ord(ch) in _FOLDED_ACCENTS:
            continue
        elif word:
            words.append(unicodedata.normalize("NFC", "".join(word)))
            word = []
    if word:
        words.append(unicodedata.normalize("NFC", "".join(word)))
    return words


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _phrase_in(doc: list[str], phrase: list[str]) -> bool:
    """Whether ``doc`` holds the words of ``phrase`` in a row, its last one as a prefix."""
    *head, last = phrase
    n = len(head)
    return any(doc[i + n].startswith(last) and doc[i : i + n] == head for i in range(len(doc) - n))


def _when(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _key(party: Any) -> str:
    return str(party.get("email") or party.get("name") or "").lower()


class Oracle:
    """The search semantics in plain Python, over a list of events."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.rows = [
            (
                _when(e["occurred_at"]), index, e["id"], e["action"], _key(e["actor"]),
                {_key(t) for t in e["targets"]}, e["organization"]["slug"], e,
            )
            for index, e in enumerate(events)
        ]
        # Newest first (ties: later inserted first), the order of every answer.
        self.rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        # The positions in ``rows`` of the events with a given action, actor, target or
        # organization: a search looks at the rows of its rarest such value only (and
        # still checks every filter on each).
        self._ranks: dict[tuple[str, str], list[int]] = defaultdict(list)
        for rank, (_, _, _, action, akey, tkeys, org, _) in enumerate(self.rows):
            self._ranks["action", action].append(rank)
            self._ranks["actor", akey].append(rank)
            for tkey in tkeys:
                self._ranks["target", tkey].append(rank)
            self._ranks["organization", org].append(rank)
        self._docs: dict[int, list[str]] = {}
        # Whether event ``index`` holds a phrase, per phrase: each event's text is
        # searched for a phrase once, however many searches name it.
        self._holds: dict[tuple[str, ...], dict[int, bool]] = {}

    def doc(self, index: int) -> list[str]:
        if index not in self._docs:
            self._docs[index] = _toks("\n".join(_strings(self.events[index])))
        return self._docs[index]

    def holds(self, index: int, phrase: list[str]) -> bool:
        """Whether event ``index`` holds ``phrase``."""
        known = self._holds.setdefault(tuple(phrase), {})
        if index not in known:
            known[index] = _phrase_in(self.doc(index), phrase)
        return known[index]

    def __call__(
        self, *, q: str = "", actions: tuple[str, ...] = (), actor: str = "", target: str = "",
        since: dt.datetime | None = None, until: dt.datetime | None = None,
        organization: str | None = None,
    ) -> list[str]:
        """Ids of the matching events, newest first (ties: later inserted first)."""
        phrases = [p for p in (_toks(w) for w in q.split()) if p]
        if q.strip() and not phrases:
            return []
        actor, target = actor.strip().lower(), target.strip().lower()
        ranks: list[Sequence[int]] = [range(len(self.rows))]
        if actions:
            ranks.append(sorted({r for a in actions for r in self._ranks.get(("action", a), [])}))
        for kind, value in (("actor", actor), ("target", target), ("organization", organization)):
            if value:
                ranks.append(self._ranks.get((kind, value), []))
        out = []
        for rank in min(ranks, key=len):
            when, index, eid, action, akey, tkeys, org, _ = self.rows[rank]
            if actions and action not in actions:
                continue
            if actor and akey != actor:
                continue
            if target and target not in tkeys:
                continue
            if since and when < since:
                continue
            if until and when >= until:
                continue
            if organization is not None and org != organization:
                continue
            if phrases and not all(self.holds(index, p) for p in phrases):
                continue
            out.append(eid)
        return out
