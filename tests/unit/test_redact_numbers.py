"""Integers of 16+ digits written as JSON numbers (snowflake ids, card numbers) are ids.

The same digits in a string are found by the built-in long-number pattern; as a number
they get the action too (drop, ``[redacted]``, the hash of the digits: the hash of the
same digits in a string), in the C tier and in the Python tiers alike. Smaller integers,
floats (a fraction or an exponent), booleans and the top-level ``version`` stay as sent.
"""

from __future__ import annotations

import gc

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditshipd.redaction.defaults import DEFAULT_ID_VALUE_PATTERNS
from auditshipd.redaction.ids import BIG_INT
from auditshipd.redaction.redactor import Redactor, compile_policy

KEY = "numbers-test-key-0123456789abcdef"
POLICIES = {
    "drop": {"action": "drop"},
    "mask": {"action": "mask"},
    "hash": {"action": "hash", "hash_key": KEY},
    "narrow": {"allow": ["actor.name", "targets[].name", "metadata.*", "context.*"]},
}
HEAD = '{"id":"ev1","action":"channel.linked","occurred_at":"2024-01-01T00:00:00Z","version":1'


def tiers(raw: dict) -> tuple[Redactor, Redactor]:
    r = compile_policy(raw)
    assert r.fast_path is not None and r.fast_path.c_plan is not None
    return r, Redactor(r.policy, c_tier=False)


def all_outputs(raw: dict, line: bytes) -> tuple[bytes | None, list[bytes]]:
    """(what the C tier answers itself, [redact_line, Python tiers, the dict walk])."""
    c, py = tiers(raw)
    outs = [c.redact_line(line), py.redact_line(line), msgspec.json.encode(c(msgspec.json.decode(line)))]
    return c.fast_path.c_plan.redact(line), outs


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_long_integers_get_the_action_everywhere_in_every_tier(name):
    line = (HEAD + ',"actor":{"name":1234567890123456},"targets":[{"name":-4111111111111111}],'
            '"context":{"n":[7,123456789012345678]},'
            '"metadata":{"channel":823456789012345678,"members":[114634938962021583,4111111111111111,5],'
            '"small":999999999999999,"neg_small":-999999999999999,"f":1.2345678901234567e18,'
            '"g":12345678901234567.5,"b":true,"channel_str":"823456789012345678"}}').encode()
    answered, outs = all_outputs(POLICIES[name], line)
    assert outs[0] == outs[1] == outs[2]
    assert answered is not None and answered == outs[0]  # 16 to 18 digits: answered in C
    out = msgspec.json.decode(outs[0])
    meta = out["metadata"]
    assert out["version"] == 1
    assert (meta["small"], meta["neg_small"], meta["b"]) == (999999999999999, -999999999999999, True)
    assert (meta["f"], meta["g"]) == (1.2345678901234567e18, 12345678901234567.5)
    for digits in ("1234567890123456", "4111111111111111", "123456789012345678", "114634938962021583"):
        assert digits.encode() not in outs[0], (name, outs[0])
    if name in ("drop", "narrow"):
        assert out["actor"] == {} and out["targets"] == [{}] and out["context"] == {"n": [7]}
        assert "channel" not in meta and meta["members"] == [5] and "channel_str" not in meta
    elif name == "mask":
        assert out["actor"] == {"name": "[redacted]"} and out["targets"] == [{"name": "[redacted]"}]
        assert meta["channel"] == meta["channel_str"] == "[redacted]"
        assert meta["members"] == ["[redacted]", "[redacted]", 5]
    else:
        c, _ = tiers(POLICIES[name])
        assert meta["channel"] == meta["channel_str"] == c.hash_value("823456789012345678")
        assert meta["members"] == [c.hash_value("114634938962021583"), c.hash_value("4111111111111111"), 5]
        assert out["targets"] == [{"name": c.hash_value("-4111111111111111")}]
    # Redacting the output again changes nothing.
    again = all_outputs(POLICIES[name], outs[0])[1]
    assert again == [outs[0]] * 3


@pytest.mark.parametrize("number", [BIG_INT - 1, BIG_INT, 10**18 - 1, 10**18, 10**19, 10**25, -BIG_INT,
                                    -(BIG_INT - 1), -(10**19), 0])
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_the_boundary_is_sixteen_digits(number, name):
    line = (HEAD + f',"actor":{{"name":{number}}},"metadata":{{"k":{number},"l":[{number}]}}}}').encode()
    answered, outs = all_outputs(POLICIES[name], line)
    assert outs[0] == outs[1] == outs[2]
    if len(str(abs(number))) <= 18:
        assert answered == outs[0]
    else:  # 19+ digits: the Python tiers answer
        assert answered is None
    kept = abs(number) < BIG_INT
    assert (f":{number}".encode() in outs[0]) is kept


def test_a_policy_whose_patterns_find_no_long_number_keeps_it():
    """The digits are checked as a string's would be: without the long-number pattern (a
    root policy with its own patterns) the same digits in a string stay, and so does the
    number; 24+ digits are still found by the long-hex pattern."""
    uuid_only = {"id_value_patterns": [DEFAULT_ID_VALUE_PATTERNS[0], DEFAULT_ID_VALUE_PATTERNS[8]]}
    line = (HEAD + ',"metadata":{"a":823456789012345678,"s":"823456789012345678",'
            '"c":123456789012345678901234567,"d":"123456789012345678901234567"}}').encode()
    answered, outs = all_outputs(uuid_only, line)
    assert outs[0] == outs[1] == outs[2]
    assert answered is None  # 27 digits: the Python tiers answer
    assert msgspec.json.decode(outs[0])["metadata"] == {"a": 823456789012345678, "s": "823456789012345678"}
    short = (HEAD + ',"metadata":{"a":823456789012345678,"s":"823456789012345678"}}').encode()
    answered, outs = all_outputs(uuid_only, short)
    assert answered == outs[0] == outs[1] == outs[2] == short  # answered in C: kept
    custom = {"id_value_patterns": [r"EMP-\d{4}"], "action": "mask"}
    out = msgspec.json.decode(compile_policy(custom).redact_line(line))["metadata"]
    assert out["a"] == 823456789012345678 and out["c"] == 123456789012345678901234567


def test_a_large_version_is_kept_as_sent():
    line = b'{"id":"e","action":"a","occurred_at":"t","version":1234567890123456}'
    answered, outs = all_outputs({}, line)
    assert answered == outs[0] == outs[1] == outs[2] == line


big = st.one_of(st.integers(-(10**20), -(10**15)), st.integers(10**15, 10**20),
                st.integers(-(10**15), 10**15), st.floats(allow_nan=False, allow_infinity=False))
values = st.recursive(big, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(st.sampled_from("abcde"), inner, max_size=4)),
                      max_leaves=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=st.dictionaries(st.sampled_from(["n", "m", "user_id", "list"]), values, max_size=4),
       leaf=big, name=st.sampled_from(sorted(POLICIES)))
def test_tiers_agree_on_numbers_anywhere(meta, leaf, name):
    line = msgspec.json.encode({"id": "e", "action": "a", "occurred_at": "t", "actor": {"name": leaf},
                                "metadata": meta, "context": meta})
    answered, outs = all_outputs(POLICIES[name], line)
    assert outs[0] == outs[1] == outs[2]
    assert answered is None or answered == outs[0]
    for x in msgspec.json.decode(outs[0]).get("metadata", {}).values():
        assert not (type(x) is int and abs(x) >= BIG_INT)


def test_the_c_number_path_leaks_nothing():
    """Kept, removed, masked and hashed long integers: no memory or reference left behind."""
    from c_leaks import assert_no_leak

    from auditshipd.redaction.ids import DROP

    line = (HEAD + ',"actor":{"name":1234567890123456},"metadata":{"a":[823456789012345678,5],'
            '"b":-4111111111111111,"c":999999999999999}}').encode()
    short = (HEAD + ',"metadata":{"a":823456789012345678}}').encode()
    # Every policy compiled (and held) first, earlier tests' garbage collected: a policy
    # freed during a check would take its references to DROP with it.
    held = [compile_policy(POLICIES[name]) for name in ("drop", "mask", "hash")]
    keep = compile_policy({"id_value_patterns": [DEFAULT_ID_VALUE_PATTERNS[0]]})
    gc.collect()
    for r in held:
        plan = r.fast_path.c_plan
        assert plan.redact(line) is not None
        assert_no_leak(lambda plan=plan: plan.redact(line), [DROP, line])
    assert keep.fast_path.c_plan.redact(short) == short
    assert_no_leak(lambda: keep.fast_path.c_plan.redact(short), [DROP, short])
