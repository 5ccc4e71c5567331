"""The event store, each backend: idempotent inserts, search semantics, cursors, purge."""

from __future__ import annotations

import asyncio
import datetime as dt
import unicodedata

import pytest
from portal_data import Oracle, make_events

from auditshipd.portal.query import EventFilter, parse_time
from auditshipd.portal.store import EventStore
from auditshipd.portal.store_sqlite import SQLiteEventStore

INJECTIONS = ["' OR 1=1 --", '"', "*", "NEAR(", "AND OR NOT", ")", "<script>alert(1)</script>",
              "alice\" OR \"bob", "a*b:c^", "%", "_", "\\", "col:alice", "-alice", "\x00",
              "alice\x00", "al\x00ice"]


async def _all(store: EventStore, f: EventFilter, chunk: int = 1000) -> list[str]:
    ids: list[str] = []
    async for events in store.iter_export(f, chunk):
        ids.extend(e["id"] for e in events)
    return ids


@pytest.fixture
async def store(portal_store: EventStore) -> EventStore:
    """An empty store (SQLite in a temp dir, or a fresh PostgreSQL schema)."""
    return portal_store


async def test_insert_is_idempotent_on_event_id(store: EventStore) -> None:
    """The same events inserted twice are stored once."""
    events = make_events(500)
    assert await store.insert_events(events) == 500
    assert await store.insert_events(events[100:300]) == 0
    assert await store.count() == 500
    assert sorted(await _all(store, EventFilter())) == sorted(e["id"] for e in events)


async def test_event_without_a_time_is_stored_once(store: EventStore) -> None:
    """An event without a usable time is indexed at its arrival; delivered again later
    (another arrival time), it is still recognised by its id and stored once."""
    events = make_events(3)
    timeless = {**events[0], "id": "evt_timeless"}
    del timeless["occurred_at"]
    assert await store.insert_events([timeless, events[1]]) == 2
    await asyncio.sleep(0.002)  # a later microsecond of arrival
    assert await store.insert_events([timeless, events[2]]) == 1
    assert await store.count() == 3
    assert (await store.get("evt_timeless"))["action"] == timeless["action"]


async def test_an_id_at_another_time_is_another_event(store: EventStore) -> None:
    """Both stores key an event by its id and time: the same id at the same time is one
    event (stored once), the same id at another time a second one."""
    event = make_events(1)[0]
    later = {**event, "occurred_at": "2027-03-04T05:06:07.000Z"}
    assert await store.insert_events([event]) == 1
    assert await store.insert_events([event]) == 0
    assert await store.insert_events([later]) == 1
    assert await store.count() == 2


async def test_redelivery_into_a_full_microsecond_is_stored_once(store: EventStore) -> None:
    """More events in one microsecond than it has ties (1,024 on SQLite: the rest move to
    the next microsecond), delivered twice: each is stored once and listed in order."""
    events = [{**e, "occurred_at": "2026-02-03T04:05:06.000Z"} for e in make_events(1030, seed=3)]
    assert await store.insert_events(events) == 1030
    assert await store.insert_events(events[1000:]) == 0
    assert await store.count() == 1030
    assert await _all(store, EventFilter()) == Oracle(events)()


async def test_newest_first_with_equal_timestamps(store: EventStore) -> None:
    """Events are listed newest first; equal times in reverse insertion order."""
    events = make_events(2000, seed=9)
    await store.insert_events(events)
    assert await _all(store, EventFilter(), chunk=37) == Oracle(events)()


async def test_equal_timestamps_across_batches_keep_insertion_order(store: EventStore) -> None:
    """Batches sharing microseconds with what is stored: a batch newer than the store, then
    its newest time again, an older time and a newer one, each listed newest first and,
    within a microsecond, in reverse insertion order."""
    times = ["2026-01-02T00:00:00.000Z", "2026-01-03T00:00:00.000Z", "2026-01-01T00:00:00.000Z",
             "2026-01-04T00:00:00.000Z"]
    batches = [[0, 1, 1], [1, 1, 2], [3, 1], [2, 0, 1, 3]]
    events: list[dict] = []
    for batch in batches:
        new = []
        for t in batch:
            n = len(events) + len(new)
            new.append({**make_events(1, seed=n, start=n)[0], "occurred_at": times[t]})
        assert await store.insert_events(new) == len(new)
        events.extend(new)
    assert await _all(store, EventFilter(), chunk=3) == Oracle(events)()
    order = sorted(range(len(events)), key=lambda i: (events[i]["occurred_at"], i), reverse=True)
    newest_first = [events[i]["id"] for i in order]
    assert await _all(store, EventFilter()) == newest_first


@pytest.mark.parametrize("word", ["İstanbul", "re\u0301sume\u0301.pdf", "Déjà", "Αθήνα",
                                  "Straße", "naïve-user"])
async def test_a_word_copied_from_an_event_finds_it(store: EventStore, word: str) -> None:
    """Whatever its letters (a dotted capital I, accents given as combining marks, Greek,
    a hyphen), a word searched exactly as the event holds it finds the event."""
    event = {**make_events(1)[0], "id": "evt_word", "metadata": {"note": f"before {word} after"}}
    other = {**make_events(2)[1], "id": "evt_other", "metadata": {"note": "nothing here"}}
    await store.insert_events([event, other])
    assert await _all(store, EventFilter(q=word)) == ["evt_word"]


async def test_time_bounds_follow_the_events_time_in_a_crowded_microsecond(store: EventStore) -> None:
    """1,500 events at one microsecond (more than SQLite numbers within it: the rest are
    numbered into the following ones), 3 at the next: since and until still follow each
    event's own time, in listings, counts and keyword searches."""
    crowded = [{**e, "id": f"evt_c{i:04d}", "occurred_at": "2026-01-01T00:00:00.000001Z"}
               for i, e in enumerate(make_events(1500))]
    after = [{**e, "id": f"evt_n{i}", "occurred_at": "2026-01-01T00:00:00.000002Z"}
             for i, e in enumerate(make_events(3))]
    for k in range(0, 1500, 500):
        await store.insert_events(crowded[k:k + 500])
    await store.insert_events(after)
    bound = parse_time("2026-01-01T00:00:00.000002Z")
    for f, expected in ((EventFilter(until=bound), crowded), (EventFilter(since=bound), after),
                        (EventFilter(q="evt", until=bound), crowded),
                        (EventFilter(q="evt", since=bound), after)):
        assert sorted(await _all(store, f)) == sorted(e["id"] for e in expected), f
        assert await store.count(f) == len(expected)
    assert await store.purge(bound) == 1500
    assert sorted(await _all(store, EventFilter())) == sorted(e["id"] for e in after)


async def test_get_respects_organization_scope(store: EventStore) -> None:
    """get() finds an event by id, but not from another organization's scope."""
    events = make_events(20)
    await store.insert_events(events)
    e = events[3]
    assert await store.get(e["id"]) == e
    assert await store.get(e["id"], organization=e["organization"]["slug"]) == e
    assert await store.get(e["id"], organization="someone-else") is None
    assert await store.get("nope") is None


@pytest.mark.parametrize("kwargs", [{}, {"q": "alice"}, {"actions": ("user.login",)},
                                    {"q": "no-such-word-anywhere"}, {"q": "***"}])
async def test_count_up_to_stops_above_the_cap(seeded_store, seeded_oracle, kwargs) -> None:
    """count_up_to is the oracle's count while it is at most the cap, else cap + 1."""
    total = len(seeded_oracle(**kwargs))
    for cap in (0, 10, total, 10_000):
        assert await seeded_store.count_up_to(EventFilter(**kwargs), cap) == min(total, cap + 1)


@pytest.mark.parametrize("text", INJECTIONS)
async def test_injection_strings_in_every_filter(seeded_store, seeded_oracle, text: str) -> None:
    """SQL/FTS5 syntax in any filter is plain text: no error, exactly the oracle's rows."""
    for kwargs in ({"q": text}, {"q": f"alice {text}"}, {"actor": text}, {"target": text},
                   {"actions": (text,)}, {"actions": ("user.login", text)}):
        got = await _all(seeded_store, EventFilter(**kwargs))
        assert got == seeded_oracle(**kwargs), kwargs


async def test_is_cursor_knows_its_own_cursors(seeded_store) -> None:
    """A next-page cursor of the store is one of its cursors; forged text is not (the
    events page keeps only these in its Newer trail)."""
    page = await seeded_store.query(EventFilter(), None, 10)
    assert page.next_cursor and seeded_store.is_cursor(page.next_cursor)
    for cursor in ("garbage", "AAAA", "' OR 1=1 --", "x" * 100, ""):
        assert not seeded_store.is_cursor(cursor)


async def test_bad_cursor_and_limits_are_value_errors(seeded_store) -> None:
    """A forged cursor or an out-of-range limit is a ValueError, not a crash."""
    for cursor in ("garbage", "AAAA", "' OR 1=1 --", "x" * 100):
        with pytest.raises(ValueError):
            await seeded_store.query(EventFilter(), cursor)
    for limit in (0, -1, 1001):
        with pytest.raises(ValueError):
            await seeded_store.query(EventFilter(), None, limit)


async def test_pagination_never_repeats_or_skips_while_inserting(store: EventStore) -> None:
    """Paging while another task inserts older and newer events: every event stored
    before the first page is seen once, nothing is seen twice, order is newest first."""
    initial = make_events(5000, seed=1)
    await store.insert_events(initial)
    extra = make_events(3000, seed=2, start=1_000_000)
    stop = asyncio.Event()

    async def writer() -> None:
        for i in range(0, len(extra), 50):
            await store.insert_events(extra[i : i + 50])
            await asyncio.sleep(0)
        stop.set()

    task = asyncio.create_task(writer())
    seen: list[str] = []
    times: list[dt.datetime] = []
    cursor = None
    while True:
        page = await store.query(EventFilter(), cursor, 40)
        seen.extend(e["id"] for e in page.events)
        times.extend(parse_time(e["occurred_at"]) for e in page.events)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    await task
    assert len(seen) == len(set(seen))
    assert {e["id"] for e in initial} <= set(seen)
    assert times == sorted(times, reverse=True)


async def test_purge_deletes_old_events_and_their_index_rows(store: EventStore) -> None:
    """purge() removes events before the cutoff, from search too, and keeps the rest."""
    events = make_events(3000, seed=4)
    await store.insert_events(events)
    cutoff = dt.datetime(2026, 1, 20, tzinfo=dt.timezone.utc)
    oracle = Oracle(events)
    expected_gone = len(oracle(until=cutoff))
    assert await store.purge(cutoff) == expected_gone
    assert await store.count() == 3000 - expected_gone
    assert await _all(store, EventFilter(q="alice")) == oracle(q="alice", since=cutoff)
    some_target = next(e["targets"][0]["email"] for e in events if e["targets"])
    assert await _all(store, EventFilter(target=some_target)) == oracle(target=some_target, since=cutoff)
    if hasattr(store, "_conn"):  # SQLite: the contentless keyword index kept no entry of
        # a purged event (deleting one takes its exact indexed text), for any token
        conn = store._conn()
        for word in ("alice", "user", "invited", "example", "2026"):
            orphans = conn.execute(
                "SELECT count(*) FROM events_fts WHERE events_fts MATCH ?"
                " AND rowid NOT IN (SELECT seq FROM events)", (word,)).fetchone()[0]
            assert orphans == 0, word
    # Re-inserting a purged event works (its index rows were really removed).
    old = [e for e in events if parse_time(e["occurred_at"]) < cutoff][:5]
    assert await store.insert_events(old) == 5


# Words both stores must cut and fold as FTS5's unicode61 tokenizer does: accents
# precomposed or decomposed, the dotted capital I, letters beside "+" and "#", words longer
# than a PostgreSQL lexeme holds (2,047 bytes), in one or several bytes a letter.
_BOLD_A, _BOLD_B = "\U0001d400", "\U0001d401"  # 4 bytes each in UTF-8
_WORDS = {
    "nfc": "École Française", "nfd": unicodedata.normalize("NFD", "École Française"),
    "turkish": "İstanbul office", "plain": "ecole francaise istanbul", "cpp": "C++ and C#",
    "st": "st", "x255yz": "x" * 255 + "yz", "x300": "x" * 300, "x2030": "x" * 2030,
    "x2031": "x" * 2031, "x5000": "x" * 4999 + "y", "e1015": "é" * 1015, "e1016": "É" * 1016,
    "bold510": _BOLD_A * 510 + " zeta", "bold511": _BOLD_A * 511 + " zeta",
    "bold508b": _BOLD_A * 508 + _BOLD_B + _BOLD_A + " zeta",
}
_WORD_QUERIES = [
    "ecole", "école", unicodedata.normalize("NFD", "école"), "francaise", "FRANÇAISE",
    "istanbul", "İstanbul", "ISTANBUL", "i", "stanbul", "cole", "c++", "c#", "st", "c",
    "x" * 255, "x" * 256, "x" * 300, "x" * 255 + "y", "x" * 512, "xy", "é" * 512, "É" * 300,
    _BOLD_A * 510 + "-z", _BOLD_A * 509 + "-z", _BOLD_A * 508 + _BOLD_B + _BOLD_A + "-z",
    _BOLD_A * 500, _BOLD_A * 507 + "-z",
]


def _word_events() -> list[dict]:
    base = make_events(len(_WORDS), seed=11)
    return [{**e, "id": name, "metadata": {"title": text}}
            for e, (name, text) in zip(base, _WORDS.items(), strict=True)]


async def test_words_are_cut_and_folded_alike_on_both_stores(store: EventStore) -> None:
    """Every query over these words finds exactly the events the oracle (FTS5's reading
    of them) finds, on each store: a decomposed accent or the dotted capital I never cuts a
    word in two (so `c++` never finds "École" through a piece "cole"), and a word longer
    than a PostgreSQL lexeme is matched by all its letters, not its first 255 or 2,030
    bytes."""
    events = _word_events()
    await store.insert_events(events)
    oracle = Oracle(events)
    for q in _WORD_QUERIES:
        assert sorted(await _all(store, EventFilter(q=q))) == sorted(oracle(q=q)), q[:40]


async def test_a_last_word_over_2030_bytes_is_matched_whole_on_postgresql(store: EventStore) -> None:
    """A query's last word is a prefix, but on PostgreSQL one of more than 2,030 bytes (over
    507 letters of four bytes) is matched whole: it never finds more than SQLite does."""
    events = _word_events()
    await store.insert_events(events)
    q = _BOLD_A * 510
    found = sorted(await _all(store, EventFilter(q=q)))
    assert found == (["bold510", "bold511"] if isinstance(store, SQLiteEventStore) else ["bold510"])
    assert sorted(Oracle(events)(q=q)) == ["bold510", "bold511"]


async def test_a_phrase_finds_the_first_256_places_of_each_of_its_words(store: EventStore) -> None:
    """An event naming 400 addresses of one domain: a phrase (an e-mail address) is found
    wherever it is on SQLite; on PostgreSQL, which keeps the first 256 positions of a
    word in an event, only where its words are within their first 256 occurrences."""
    members = [f"user{i}@corp.test" for i in range(400)]
    event = {**make_events(1)[0], "id": "grp", "metadata": {"members": members}}
    await store.insert_events([event])
    oracle = Oracle([event])
    for q in ["user5@corp.test", "user250@corp.test", "user399", "corp.test"]:
        assert await _all(store, EventFilter(q=q)) == oracle(q=q) == ["grp"], q
    # "corp" and "test" occur once per address: user255's are the last positions kept
    late = ["user255@corp.test", "user256@corp.test", "user399@corp.test"]
    found = [bool(await _all(store, EventFilter(q=q))) for q in late]
    assert found == ([True] * 3 if isinstance(store, SQLiteEventStore) else [True, False, False])
