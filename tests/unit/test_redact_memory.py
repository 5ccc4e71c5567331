"""Redaction keeps bounded memory: caches bounded by bytes, compiled policies freed on reload."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import msgspec
import pytest

from auditshipd.redaction import _redact_c
from auditshipd.redaction.ids import CACHE_MAX
from auditshipd.redaction.policy import CACHE_ITEM_MAX
from auditshipd.redaction.redactor import compile_policy

KEY = "memory-test-key-0123456789abcdef"
LONG = 32 * 1024
# Words only: no id inside, so every long key and value is kept (and, before, cached).
_TEXT = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * (LONG // 40))[:LONG]
# A long clean value with prefilter runs (it goes to the regexes, then to the clean caches).
_RUNS = ("zyxwvutsrqponmlkjihg " * (LONG // 20))[:LONG]


def _lines(n: int) -> list[bytes]:
    return [msgspec.json.encode({
        "id": f"ev{i}", "action": "user.updated", "occurred_at": "2024-05-01T09:00:00Z",
        "actor": {"email": "ada@acme.test"},
        "metadata": {f"{i:06d} {_TEXT}": "v", "note": f"{i:06d}{_RUNS}", "session_id": f"{i} {_TEXT}"},
    }) for i in range(n)]


def _redactor(raw: dict, c_tier: bool):
    r = compile_policy(raw)
    r = type(r)(r.policy, c_tier=c_tier)
    assert (r.fast_path.c_plan is not None) is c_tier
    return r


def _kept_after(r, lines: list[bytes], check) -> int:
    """Bytes the redactor keeps (traced Python and C allocations) after redacting
    ``lines[1:]`` (``lines[0]`` warms up code objects and regex caches), each output
    passed to ``check`` and dropped."""
    r.redact_line(lines[0])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for line in lines[1:]:
            check(r.redact_line(line))
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("c_tier", [True, False], ids=["c-tier", "python-tiers"])
@pytest.mark.parametrize("action", ["drop", "hash"])
def test_caches_do_not_keep_long_keys_or_values(c_tier, action):
    """60 lines with distinct 32 KiB keys, values and hashed values (5.6 MiB in all) leave
    less than 2 MiB behind in the redactor: no cache keeps a long key or text."""
    r = _redactor({"action": action, **({"hash_key": KEY} if action == "hash" else {})}, c_tier)

    def check(out: bytes) -> None:
        assert b"lorem ipsum" in out  # the long key really was kept

    kept = _kept_after(r, _lines(60), check)
    assert kept < 2 * 1024 * 1024, f"{kept / 2**20:.1f} MiB kept"
    assert all(len(k) <= CACHE_ITEM_MAX for k in r.ids.key_cache)
    assert all(len(k) <= CACHE_ITEM_MAX for k in r.ids.hash_cache)


def test_c_tier_cache_limit_is_the_python_one():
    """The C tier caches no key or string longer than the Python caches do."""
    assert _redact_c.CACHE_ITEM_MAX == CACHE_ITEM_MAX


def test_plan_is_tracked_by_the_garbage_collector():
    """The C Plan takes part in garbage collection (it sits in a reference cycle)."""
    r = compile_policy({"action": "mask"})
    assert r.fast_path.c_plan is not None
    assert gc.is_tracked(r.fast_path.c_plan)
    assert gc.get_referents(r.fast_path.c_plan)  # traverse reports its callbacks


def test_fifty_reloads_free_every_old_policy():
    """50 custom policies compiled (C tier included), used and dropped: none stays alive."""
    line = msgspec.json.encode({"id": "e", "action": "a", "occurred_at": "t",
                                "metadata": {"user_id": "x", "note": "usr_01HZX8K2M3N4P5Q6R7S8T9V0A1"}})
    refs = []
    for n in range(50):
        r = compile_policy({"action": "mask", "allow": ["actor.email", "metadata.*", f"extra{n}"]})
        assert r.fast_path.c_plan is not None
        assert b"[redacted]" in r.redact_line(line)
        refs.append(weakref.ref(r.policy))
        del r
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0


def _distinct_short_lines(n: int) -> list[bytes]:
    """Lines each with a metadata key never seen before and an internal id to hash."""
    return [msgspec.json.encode({
        "id": f"ev{i}", "action": "user.updated", "occurred_at": "2024-05-01T09:00:00Z",
        "actor": {"email": "ada@acme.test", "id": f"user_01HZX8K2M3N4P5Q6R7S{i:07d}"},
        "metadata": {f"field_{i:07d}": "v", f"user_{i:07d}_id": f"usr_01HZX8K2M3N4P5Q6{i:08d}"},
    }) for i in range(n)]


@pytest.mark.parametrize("c_tier", [True, False], ids=["c-tier", "python-tiers"])
def test_caches_stay_bounded_over_many_distinct_short_keys(c_tier):
    """Four times as many distinct short keys and hashed ids as a cache holds: no cache
    grows past its entry limit, and what the redactor keeps stays under 4 MiB (a full
    C table is under 1 MiB, each Python cache a few MiB at most)."""
    r = _redactor({"action": "hash", "hash_key": KEY}, c_tier)
    lines = _distinct_short_lines(4 * CACHE_MAX)
    hashed = 0

    def check(out: bytes) -> None:
        nonlocal hashed
        hashed += out.count(b'"h:')
        assert b"usr_01HZX8K2M3N4P5Q6" not in out and b"user_01HZX8K2M3N4P5Q6R7S" not in out

    kept = _kept_after(r, lines, check)
    assert hashed >= len(lines) - 1  # the ids really went through the hash (and its cache)
    assert len(r.ids.key_cache) <= CACHE_MAX and len(r.ids.hash_cache) <= CACHE_MAX
    assert kept < 4 * 1024 * 1024, f"{kept / 2**20:.1f} MiB kept"


@pytest.mark.parametrize("c_tier", [True, False], ids=["c-tier", "python-tiers"])
def test_values_and_keys_near_the_line_limit_are_redacted_and_not_kept(c_tier):
    """Keys and values of 384 KiB each (a line near the default max_line_bytes of 1 MiB),
    an internal id inside the value: redacted, and nothing of them kept afterwards."""
    r = _redactor({"action": "mask"}, c_tier)
    big = 400 * 1024
    lines = [msgspec.json.encode({
        "id": f"ev{i}", "action": "user.updated", "occurred_at": "2024-05-01T09:00:00Z",
        "actor": {"email": "ada@acme.test"},
        "metadata": {f"{i:06d} {_TEXT * (big // LONG)}": "v",
                     "note": f"{i} {_TEXT * (big // LONG // 2)} usr_01HZX8K2M3N4P5Q6R7S8T9V0A{i} "
                             f"{_TEXT * (big // LONG // 2)}"},
    }) for i in range(6)]
    assert all(700 * 1024 < len(line) < 1024 * 1024 for line in lines)

    def check(out: bytes) -> None:
        assert b"usr_01HZX8K2M3N4P5Q6R7S8T9V0A" not in out
        assert b"lorem ipsum" in out and b"ada@acme.test" in out

    kept = _kept_after(r, lines, check)
    # less than one of those keys or values: none is kept
    assert kept < 256 * 1024, f"{kept / 2**10:.0f} KiB kept"
