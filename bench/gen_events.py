"""Deterministic generator of realistic WorkOS-style audit events (~500 bytes each).

    .venv/bin/python bench/gen_events.py OUT N [--seed S]

Writes N JSON lines to OUT (the same bytes for the same N and seed). Each event has a
ULID-like ``id``, an ``action`` from a realistic set, ``occurred_at`` (1 ms apart),
``version``, ``organization`` {id "org_01H...", slug, name}, ``actor`` {type, id
"user_01H...", email, name}, ``targets`` [{type, id, email, name}], ``context``
{location, user_agent, session_id} and nested ``metadata`` mixing internal ids
(membership_id, request_id, api_key_id...) with innocent fields.

Speed: people, organisations and user agents come from pools built once; random ids
come from ``randbytes`` translated to Crockford base32 in bulk; a few thousand events
are encoded once with ``msgspec`` as templates and each event is one ``%`` formatting.
About 1M events in a few seconds.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgspec

__all__ = ["ACTIONS", "EventFactory", "generate", "write_events"]

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

ACTIONS = [
    "user.provisioned", "user.deprovisioned", "user.invited", "user.role_changed",
    "user.signed_in", "user.mfa_enrolled", "dsync.user.updated", "dsync.group.user_added",
    "scim.sync.completed", "admin.settings_changed", "organization.domain_verified",
    "api_key.created", "audit_log.exported", "sso.connection.activated",
]
FIRST = ["Jane", "Bob", "Alice", "Hank", "Maria", "Wei", "Olu", "Priya", "Sven", "Amara",
         "Kenji", "Lucia", "Dmitri", "Fatima", "Noah", "Ines"]
LAST = ["Doe", "Smith", "Garcia", "Chen", "Okafor", "Patel", "Nakamura", "Rossi", "Novak",
        "Haddad", "Larsen", "Silva", "Kowalski", "Dubois", "Murphy", "Tanaka"]
ORG_NAMES = ["Acme Corp", "Globex Corporation", "Initech", "Umbrella Health", "Hooli",
             "Stark Industries", "Wayne Enterprises", "Tyrell Systems", "Soylent Foods",
             "Cyberdyne", "Massive Dynamic", "Vandelay Imports"]
AGENTS = ["Mozilla/5.0 Chrome/124.0", "Mozilla/5.0 Safari/17.4", "Okta SCIM Client 1.0",
          "Azure AD SCIM", "curl/8.5.0", "workos-node/7.9.1", "Go-http-client/2.0"]
ROLES = ["member", "admin", "billing_admin", "viewer", "owner"]
SOURCES = ["okta", "azure_ad", "google_workspace", "onelogin", "jumpcloud", "dashboard", "api"]
FIELDS = ["name", "email", "role", "department", "title", "manager", "groups"]
BASE_TIME_MS = int(_dt.datetime(2025, 11, 20, 9, 0, tzinfo=_dt.timezone.utc).timestamp() * 1000)


def _crock(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 32)
        out.append(CROCKFORD[r])
    return "".join(reversed(out))


_RAND_TABLE = bytes(CROCKFORD[b % 32].encode()[0] for b in range(256))
_RID = 23  # random characters after a "prefix_01H" (26-character ULID-like ids)


class EventFactory:
    """Builds event dicts; deterministic for a seed. ``event(i)`` is the i-th event."""

    def __init__(self, seed: int = 7, pool: int = 4096):
        self.rng = rng = random.Random(seed)
        self._rand = ""  # Crockford characters, consumed a few at a time
        self._rpos = 0
        orgs = []
        for k, name in enumerate(ORG_NAMES * 4):
            slug = name.split()[0].lower() + ("" if k < len(ORG_NAMES) else f"-{k}")
            orgs.append({"id": "org_01H" + self._rid(_RID), "slug": slug, "name": name.split()[0]})
        self.orgs = orgs
        people = []
        for _ in range(pool):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            org = rng.choice(orgs)
            domain = org["slug"].split("-")[0][:8] + ".test"
            people.append((first, last, f"{first.lower()}{rng.randrange(100)}@{domain}",
                           "user_01H" + self._rid(_RID), org))
        self.people = people
        self.ips = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}."
                    f"{rng.randrange(1, 255)}" for _ in range(512)]
        self._sec_cache: tuple[int, str] = (-1, "")
        self._ms_prefix: tuple[int, str] = (-1, "")

    def _rid(self, n: int) -> str:
        """n random Crockford characters (bulk-generated: randbytes + translate)."""
        if self._rpos + n > len(self._rand):
            self._rand = self.rng.randbytes(1 << 20).translate(_RAND_TABLE).decode()
            self._rpos = 0
        s = self._rand[self._rpos:self._rpos + n]
        self._rpos += n
        return s

    def ulid_time(self, ms: int) -> str:
        """The 10-character time part of a ULID (the first 9 change every 32 ms)."""
        hi = ms >> 5
        if self._ms_prefix[0] != hi:
            self._ms_prefix = (hi, _crock(hi, 9))
        return self._ms_prefix[1] + CROCKFORD[ms & 31]

    def occurred_at(self, ms: int) -> str:
        sec, milli = divmod(ms, 1000)
        if self._sec_cache[0] != sec:
            stamp = _dt.datetime.fromtimestamp(sec, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
            self._sec_cache = (sec, stamp)
        return f"{self._sec_cache[1]}{milli:03d}Z"

    def event(self, i: int, ids: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The i-th event as a dict. ``ids``: (event id, occurred_at, and the random parts
        of session, request, membership and api key ids) instead of fresh random ones."""
        ms = BASE_TIME_MS + i
        if ids is None:
            ids = (self.ulid_time(ms) + self._rid(16), self.occurred_at(ms), self._rid(_RID),
                   self._rid(16).lower(), self._rid(_RID), self._rid(16))
        eid, occurred, sess, req, mem, key = ids
        h = (i * 2654435761) & 0xFFFFFFFF  # a cheap deterministic scramble of i
        first, last, email, uid, org = self.people[h % len(self.people)]
        tfirst, tlast, temail, tuid, _ = self.people[(h >> 12) % len(self.people)]
        return {
            "id": eid,
            "action": ACTIONS[(h >> 7) % len(ACTIONS)],
            "occurred_at": occurred,
            "version": 1,
            "organization": {"id": org["id"], "slug": org["slug"], "name": org["name"]},
            "actor": {"type": "user", "id": uid, "email": email, "name": f"{first} {last[0]}."},
            "targets": [{"type": "user", "id": tuid, "email": temail, "name": f"{tfirst} {tlast[0]}."}],
            "context": {"location": self.ips[h % len(self.ips)],
                        "user_agent": AGENTS[(h >> 3) % len(AGENTS)],
                        "session_id": "01H" + sess},
            "metadata": {
                "request_id": req,
                "membership_id": "om_01H" + mem,
                "source": SOURCES[(h >> 9) % len(SOURCES)],
                "change": {"role": ROLES[h % 5], "api_key_id": "key_" + key,
                           "attempt": 1 + (h >> 2) % 3},
            },
        }


_MARKS = ("@@EID@@", "@@TS@@", "@@S@@", "@@R@@", "@@M@@", "@@K@@")


def generate(n: int, seed: int = 7, block: int = 50_000, templates: int = 4096) -> Iterator[bytes]:
    """NDJSON blocks (each ends with a newline) holding ``n`` events in total.

    ``templates`` events are encoded once with msgspec, with markers where the per-event
    values go (id, occurred_at and four random internal ids); each event is then one
    ``%`` formatting of a template: no per-event dict building or encoding.
    """
    factory = EventFactory(seed)
    lines = msgspec.json.Encoder().encode_lines(
        [factory.event(k, _MARKS) for k in range(min(templates, max(n, 1)))]).decode()
    tpls = []
    for line in lines.splitlines():
        line = line.replace("%", "%%")
        for mark in _MARKS:
            line = line.replace(mark, "%s")
        tpls.append(line + "\n")
    k = len(tpls)
    rid = factory._rid
    ulid_time, occurred_at = factory.ulid_time, factory.occurred_at
    for start in range(0, n, block):
        out = []
        append = out.append
        for i in range(start, min(n, start + block)):
            ms = BASE_TIME_MS + i
            r = rid(94)
            append(tpls[i % k] % (ulid_time(ms) + r[:16], occurred_at(ms), r[16:39],
                                  r[39:55].lower(), r[55:78], r[78:94]))
        yield "".join(out).encode()


def write_events(out: str, n: int, seed: int = 7) -> int:
    """Write ``n`` events to ``out``; returns the number of bytes written."""
    total = 0
    with open(out, "wb") as f:
        for chunk in generate(n, seed):
            f.write(chunk)
            total += len(chunk)
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("n", type=int)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    size = write_events(args.out, args.n, args.seed)
    dt = time.perf_counter() - t0
    print(f"wrote {args.n:,} events, {size / 1e6:.1f} MB ({size / max(1, args.n):.0f} B/event)"
          f" to {args.out} in {dt:.2f}s ({args.n / dt:,.0f} events/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
