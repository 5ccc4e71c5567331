"""The JSON API on the seeded 100,000-event store, compared with the Python oracle."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import io
import itertools
import json
from typing import Any

import pytest
from portal_data import Oracle

from auditshipd.testing import wait_for_async

UTC = dt.timezone.utc


async def _all_ids(http, env, params: list[tuple[str, str]], token: str | None = None) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        query = [*params, ("limit", "1000")] + ([("cursor", cursor)] if cursor else [])
        async with http.get(f"{env.url}/api/events", params=query, headers=env.auth(token or env.admin)) as r:
            assert r.status == 200, await r.text()
            body = await r.json()
        ids.extend(e["id"] for e in body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


def _pick(events: list[dict[str, Any]]) -> dict[str, str]:
    """Filter values that occur in the data (an actor and a target with a few hundred events)."""
    actor = events[10]["actor"]["email"]
    target = next(t["email"] for e in events[20:] for t in e["targets"])
    return {"actor": actor, "target": target}


async def test_every_filter_combination_matches_the_oracle(portal, http, seeded_events, seeded_oracle: Oracle) -> None:
    """All combinations of q, action, actor, target, since, until return exactly the oracle's ids, in order."""
    picked = _pick(seeded_events)
    qs = ["", "alice", "quarterly report", "smith@acme"]
    actions = [(), ("user.login",), ("role.granted", "role.revoked", "billing.updated")]
    actors = ["", picked["actor"].upper()]
    targets = ["", picked["target"]]
    ranges = [(None, None), (dt.datetime(2026, 2, 1, tzinfo=UTC), None),
              (dt.datetime(2026, 1, 10, 6, 30, tzinfo=UTC), dt.datetime(2026, 2, 14, tzinfo=UTC))]
    checked = 0
    for q, acts, actor, target, (since, until) in itertools.product(qs, actions, actors, targets, ranges):
        if not (q or acts or actor or target) and since is None:
            continue  # the unfiltered listing is covered by the export round-trip
        params = [("q", q), ("actor", actor), ("target", target)] + [("action", a) for a in acts]
        if since:
            params.append(("since", since.isoformat()))
        if until:
            params.append(("until", until.strftime("%Y-%m-%dT%H:%M:%SZ")))
        params = [(k, v) for k, v in params if v]
        expected = seeded_oracle(q=q, actions=acts, actor=actor, target=target, since=since, until=until)
        assert await _all_ids(http, portal, params) == expected, params
        checked += 1
    assert checked > 100


async def test_event_by_id_and_scoping(portal, http, seeded_events) -> None:
    """GET /api/events/{id} returns the stored event; unknown ids and other organizations' events are 404."""
    event = seeded_events[1234]
    async with http.get(f"{portal.url}/api/events/{event['id']}", headers=portal.auth(portal.admin)) as r:
        assert r.status == 200
        assert (await r.json())["data"] == event
    async with http.get(f"{portal.url}/api/events/nope", headers=portal.auth(portal.admin)) as r:
        assert r.status == 404
    other = next(e for e in seeded_events if e["organization"]["slug"] != "acme")
    async with http.get(f"{portal.url}/api/events/{other['id']}", headers=portal.auth(portal.acme)) as r:
        assert r.status == 404
        assert other["id"] not in await r.text()


async def test_organization_token_sees_only_its_organization(portal, http, seeded_oracle) -> None:
    """An organization-scoped admin's searches contain only that organization's events."""
    ids = await _all_ids(http, portal, [("action", "user.deleted")], token=portal.acme)
    assert ids == seeded_oracle(actions=("user.deleted",), organization="acme")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_export_round_trips(portal, http, seeded_events, seeded_oracle, fmt: str) -> None:
    """An export holds exactly the matching events, newest first, and parses back to them."""
    by_id = {e["id"]: e for e in seeded_events}
    params = {"format": fmt} if fmt == "jsonl" else {"format": fmt, "action": "user.login", "q": "smith"}
    async with http.get(f"{portal.url}/api/export", params=params, headers=portal.auth(portal.admin)) as r:
        assert r.status == 200
        assert "attachment" in r.headers["Content-Disposition"]
        body = (await r.read()).decode()
    if fmt == "jsonl":
        events = [json.loads(line) for line in body.splitlines()]
        assert [e["id"] for e in events] == seeded_oracle()
        assert len(events) == len(seeded_events)
    else:
        rows = list(csv.DictReader(io.StringIO(body, newline="")))
        events = [json.loads(row["event"]) for row in rows]
        assert [e["id"] for e in events] == seeded_oracle(actions=("user.login",), q="smith")
        for row in rows[:200]:
            original = by_id[row["id"]]
            assert row["action"] == original["action"]
            assert row["actor_email"] == original["actor"].get("email", "")
            assert json.loads(row["metadata"]) == original["metadata"]
    assert all(e == by_id[e["id"]] for e in events)


async def test_access_is_recorded_in_the_journal(portal, http, seeded_events) -> None:
    """Searches, event views and exports write audit_log.viewed / audit_log.exported with who and which filters."""
    h = portal.auth(portal.admin)
    async with http.get(f"{portal.url}/api/events", params=[("q", "alice"), ("action", "user.login")], headers=h) as r:
        assert r.status == 200
    async with http.get(f"{portal.url}/api/events/{seeded_events[0]['id']}", headers=h) as r:
        assert r.status == 200
    async with http.get(f"{portal.url}/api/export", params={"format": "csv", "actor": "x@y"}, headers=h) as r:
        await r.read()
    records = portal.operator_records()
    assert [r["action"] for r in records] == ["audit_log.viewed", "audit_log.viewed", "audit_log.exported"]
    assert all(r["actor"] == {"type": "portal_token", "name": "root-admin", "role": "admin"} for r in records)
    assert records[0]["metadata"]["filters"] == {"q": "alice", "action": ["user.login"]}
    assert records[1]["metadata"]["event"] == seeded_events[0]["id"]
    assert records[2]["metadata"] == {"format": "csv", "filters": {"actor": "x@y"}}


async def test_an_operators_access_to_one_organization_says_which(portal, http) -> None:
    """An operator's search and export of one organization record that organization in
    their filters: they read differently from a search or export of every tenant."""
    h = portal.auth(portal.admin)
    async with http.get(f"{portal.url}/api/events", params={"organization": "acme"}, headers=h) as r:
        assert r.status == 200
        acme = (await r.json())["data"]
    assert acme and {e["organization"]["slug"] for e in acme} == {"acme"}
    async with http.get(f"{portal.url}/api/export", params={"organization": "acme"}, headers=h) as r:
        assert r.status == 200
        await r.read()
    async with http.get(f"{portal.url}/api/export", headers=h) as r:
        await r.read()
    viewed, exported_one, exported_all = portal.operator_records()
    assert viewed["metadata"]["filters"] == {"organization": "acme"}
    assert exported_one["metadata"]["filters"] == {"organization": "acme"}
    assert exported_all["metadata"]["filters"] == {}


async def test_an_operators_reads_are_told_to_each_organization_they_showed(
        portal, http, seeded_events) -> None:
    """An operator's search, event view and export add, in each organization whose events
    they showed, a record of its own: who (the token), what and how many of its events,
    without the operator's address or user agent and without filters that were not
    limited to it; a search repeated (or paged) tells no organization twice. An
    organization's own admin adds no such record."""
    h = portal.auth(portal.admin)
    async with http.get(f"{portal.url}/api/events", params={"q": "alice", "limit": "200"}, headers=h) as r:
        shown = (await r.json())["data"]
    async with http.get(f"{portal.url}/api/events", params={"q": "alice", "limit": "200"}, headers=h) as r:
        assert r.status == 200
    counts = collections.Counter(e["organization"]["slug"] for e in shown if e.get("organization"))
    assert len(counts) >= 2
    told = [e for e in portal.journal_events() if e.get("organization")]
    assert {e["organization"]["slug"]: e["metadata"] for e in told} == {
        org: {"view": "search", "results": n} for org, n in counts.items()}
    assert len(told) == len(counts)
    assert all(e["action"] == "audit_log.viewed" and e["context"] == {}
               and e["actor"] == {"type": "portal_token", "name": "root-admin", "role": "admin"}
               for e in told)
    assert portal.operator_records()[0]["context"]["location"] == "127.0.0.1"

    event = next(e for e in seeded_events if (e.get("organization") or {}).get("slug") == "globex")
    async with http.get(f"{portal.url}/api/events/{event['id']}", headers=h) as r:
        assert r.status == 200
    async with http.get(f"{portal.url}/api/export", params={"organization": "acme", "format": "jsonl"},
                        headers=h) as r:
        rows = len((await r.read()).splitlines())

    def new_records() -> list[dict[str, Any]]:
        return [e for e in portal.journal_events() if e.get("organization")][len(told):]

    # An export is recorded once its last byte is sent (with the rows actually read): the
    # client may see the end of the body first.
    await wait_for_async(lambda: len(new_records()) >= 2, 10, message="the export's record")
    new = new_records()
    assert [(e["action"], e["organization"]["slug"], e["metadata"]) for e in new] == [
        ("audit_log.viewed", "globex", {"view": "event", "event": event["id"], "found": True}),
        ("audit_log.exported", "acme", {"format": "jsonl", "filters": {"organization": "acme"},
                                        "rows": rows})]
    assert rows > 0

    before = len(portal.journal_events())
    async with http.get(f"{portal.url}/api/events", params={"q": "bob"}, headers=portal.auth(portal.acme)) as r:
        assert r.status == 200
    mine = portal.journal_events()[before:]
    assert len(mine) == 1 and mine[0]["organization"] == {"slug": "acme"}
    assert mine[0]["context"]["location"] == "127.0.0.1"


async def test_an_organizations_token_may_name_only_its_own(portal, http) -> None:
    """organization= narrows an operator's search; an organization's token naming another
    is refused (403), naming its own is the same as naming none; a bad slug is a 400."""
    h = portal.auth(portal.acme)
    async with http.get(f"{portal.url}/api/events", params={"organization": "globex"}, headers=h) as r:
        assert r.status == 403
        assert (await r.json())["param"] == "organization"
    async with http.get(f"{portal.url}/api/events", params={"organization": "acme"}, headers=h) as r:
        own = await r.json()
    async with http.get(f"{portal.url}/api/events", headers=h) as r:
        assert own == await r.json()
    async with http.get(f"{portal.url}/api/events", params={"organization": "Not A Slug"},
                        headers=portal.auth(portal.admin)) as r:
        assert r.status == 400


async def test_requests_work_when_the_journal_cannot_be_written(portal, http) -> None:
    """An unwritable journal does not fail the request (AuditJournal never raises)."""
    portal.journal.parent.mkdir(parents=True, exist_ok=True)
    portal.journal.mkdir()  # a directory where the file should be
    async with http.get(f"{portal.url}/api/events", params={"q": "bob"}, headers=portal.auth(portal.admin)) as r:
        assert r.status == 200
        assert (await r.json())["data"]


@pytest.mark.parametrize(
    "params, param",
    [({"since": "yesterday"}, "since"), ({"until": "2026-13-01"}, "until"), ({"limit": "0"}, "limit"),
     ({"limit": "x"}, "limit"), ({"limit": "\u0663"}, "limit"), ({"limit": "5_0"}, "limit"),
     ({"cursor": "forged"}, "cursor"), ({"q": "a " * 40}, "q")],
)
async def test_bad_parameters_are_400(portal, http, params: dict[str, str], param: str) -> None:
    """Malformed parameters answer 400 naming the parameter."""
    async with http.get(f"{portal.url}/api/events", params=params, headers=portal.auth(portal.admin)) as r:
        assert r.status == 400
        assert (await r.json())["param"] == param


async def test_streams_and_openapi(portal, http) -> None:
    """/api/streams lists the configured sinks (scoped for organization tokens); the OpenAPI document describes every endpoint."""
    async with http.get(f"{portal.url}/api/streams", headers=portal.auth(portal.admin)) as r:
        names = [s["name"] for s in (await r.json())["data"]]
    assert names == ["index", "acme-siem"]
    async with http.get(f"{portal.url}/api/streams", headers=portal.auth(portal.acme)) as r:
        assert [s["name"] for s in (await r.json())["data"]] == ["acme-siem"]
    async with http.get(f"{portal.url}/api/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/api/events", "/api/events/{id}", "/api/export", "/api/export.manifest",
                                 "/api/streams", "/api/streams/{id}", "/api/streams/{id}/test"}
