"""id_key_patterns globs with sets: "[0-9]" is a range of characters, in every tier."""

from __future__ import annotations

import msgspec
import pytest

from auditshipd.redaction.defaults import DEFAULT_ID_KEY_PATTERNS
from auditshipd.redaction.policy import normalize_key, normalize_pattern
from auditshipd.redaction.redactor import Redactor, compile_policy


def tiers(raw: dict) -> list[Redactor]:
    """The policy with the C tier (asserted in use) and on the Python tiers only."""
    r = compile_policy(raw)
    assert r.fast_path is not None and r.fast_path.c_plan is not None
    return [r, Redactor(r.policy, c_tier=False)]


@pytest.mark.parametrize(("pattern", "normalized"), [
    ("ref[0-9]", "ref[0-9]"),
    ("acct[0-9][0-9]", "acct[0-9][0-9]"),
    ("X-Tenant-[A-Z]", "x_tenant_[a-z]"),
    ("emp[!a-c]", "emp[!a-c]"),
    ("a[]-]b", "a[]-]b"),
    ("userId", "user_id"),
    ("Request-Id", "request_id"),
    ("open[x-y", "open[x_y"),  # no closing "]": a literal "[", normalized as a key is
])
def test_sets_keep_their_ranges_outside_is_normalized(pattern, normalized):
    assert normalize_pattern(pattern) == normalized
    if "[" not in pattern:
        assert normalize_pattern(pattern) == normalize_key(pattern)


def test_range_patterns_match_their_keys_in_every_tier():
    raw = {"id_key_patterns": [*DEFAULT_ID_KEY_PATTERNS, "ref[0-9]", "acct[0-9][0-9]", "Shard-[a-c]"]}
    line = msgspec.json.encode({
        "id": "ev1", "action": "a", "occurred_at": "2026-01-01T00:00:00Z",
        "metadata": {"ref5": 48213, "acct42": 7731, "ref0": 1, "shard_b": 9, "ref_": 2, "acct4x": 3,
                     "shard_d": 4},
    })
    for r in tiers(raw):
        assert msgspec.json.decode(r.redact_line(line))["metadata"] == {"ref_": 2, "acct4x": 3, "shard_d": 4}
    for r in tiers({**raw, "action": "mask"}):
        meta = msgspec.json.decode(r.redact_line(line))["metadata"]
        assert meta["ref5"] == meta["acct42"] == meta["shard_b"] == "[redacted]"
