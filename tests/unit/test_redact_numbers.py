"""Integers of 16+ digits written as JSON numbers (snowflake ids, card numbers) are ids.

The same digits in a string are found by the built-in long-number pattern; as a number
they get the action too (drop, ``[redacted]``, the hash of the digits: the hash of the
same digits in a string), in the C tier and in the Python tiers alike. A float that is
such a whole number (``1.2345678901234568e+18``, ``1234567890123456.0``: an id a
producer wrote as a float) is the integer it equals. Smaller integers and floats,
floats with a fraction, booleans and the top-level ``version`` stay as sent.
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
            '"small":999999999999999,"neg_small":-999999999999999,"f":999999999999999.0,'
            '"g":1000000000000000.5,"b":true,"channel_str":"823456789012345678"}}').encode()
    answered, outs = all_outputs(POLICIES[name], line)
    assert outs[0] == outs[1] == outs[2]
    assert answered is not None and answered == outs[0]  # 16 to 18 digits: answered in C
    out = msgspec.json.decode(outs[0])
    meta = out["metadata"]
    assert out["version"] == 1
    assert (meta["small"], meta["neg_small"], meta["b"]) == (999999999999999, -999999999999999, True)
    assert (meta["f"], meta["g"]) == (999999999999999.0, 1000000000000000.5)
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


# Floats that are whole numbers of 16+ digits, as a producer may write an id, and the
# integers they equal (msgspec parses the spelling to the nearest double first).
WHOLE_FLOATS = {
    "1.2345678901234568e+18": 1234567890123456768,
    "1234567890123456.0": 1234567890123456,
    "-9.007199254740993e15": -9007199254740992,
    "1e16": 10**16,
    "1E+16": 10**16,
    "1e15": 10**15,
    "-1000000000000000.0": -(10**15),
    "12345678901234567.5": 12345678901234568,
    "4.5e22": int(4.5e22),  # 44999999999999995805696: 23 digits, the Python tiers for the integer
}
# Floats that stay: below 1e15, with a fraction, tiny.
KEPT_FLOATS = ("999999999999999.0", "999999999999999.9", "1000000000000000.5", "-1000000000000000.5",
               "9.99999999999999e14", "1.5e-20", "123.25")
FLOAT_POLICIES = {**POLICIES, "default": {}}


def every_tier(raw: dict, line: bytes) -> tuple[bytes | None, list[bytes]]:
    """(what the C tier answers itself, [redact_line, the strict Python tier, the loose
    Python tier, the dict walk])."""
    c, py = tiers(raw)
    outs = [c.redact_line(line), py.redact_line(line), py.fast_path._loose(line),
            msgspec.json.encode(c(msgspec.json.decode(line)))]
    return c.fast_path.c_plan.redact(line), outs


@pytest.mark.parametrize("name", sorted(FLOAT_POLICIES))
def test_whole_floats_of_16_digits_are_the_integers_they_equal(name):
    """In a leaf, a list of structs, context and metadata (a free-form key, a nested map,
    a list): each whole float of 1e15 or more gives what its integer gives, in every tier."""
    def line(spell: dict) -> bytes:
        big, big2, big3, big4 = (spell[k] for k in list(WHOLE_FLOATS)[:4])
        kept = ",".join(f'"k{i}":{x}' for i, x in enumerate(KEPT_FLOATS))
        return (HEAD + f',"actor":{{"name":{big}}},"targets":[{{"name":{big2}}}],"context":{{"n":[7,{big3}]}},'
                f'"metadata":{{"note":{big},"deep":{{"x":{big4},"y":[{",".join(map(str, spell.values()))}]}},'
                f'{kept}}}}}').encode()

    raw = FLOAT_POLICIES[name]
    floats = line({k: k for k in WHOLE_FLOATS})
    answered, outs = every_tier(raw, floats)
    assert outs == [outs[0]] * 4, (name, outs)
    assert answered == outs[0]  # answered in C
    as_ints = every_tier(raw, line(WHOLE_FLOATS))[1]
    assert outs[0] == as_ints[0] == as_ints[1]  # the very output of the integers
    meta = msgspec.json.decode(outs[0])["metadata"]
    assert [meta[f"k{i}"] for i in range(len(KEPT_FLOATS))] == [float(x) for x in KEPT_FLOATS]
    assert not any(x.encode() in outs[0] for x in WHOLE_FLOATS)
    if name == "mask":
        assert meta["note"] == "[redacted]" and meta["deep"]["y"] == ["[redacted]"] * len(WHOLE_FLOATS)
    elif name == "hash":
        c, _ = tiers(raw)
        assert meta["note"] == c.hash_value("1234567890123456768")
        assert meta["deep"]["y"] == [c.hash_value(str(n)) for n in WHOLE_FLOATS.values()]
    else:
        assert "note" not in meta and meta["deep"] == {"y": []}
    assert every_tier(raw, outs[0])[1] == [outs[0]] * 4  # redacting again changes nothing


@pytest.mark.parametrize("spelling", [*WHOLE_FLOATS, *KEPT_FLOATS])
@pytest.mark.parametrize("name", sorted(FLOAT_POLICIES))
def test_a_float_alone_under_a_free_form_key(spelling, name):
    """The only number of its event: an exponent gives the Python tiers no run of 16
    characters to find, they must still look."""
    line = (HEAD + f',"metadata":{{"note":{spelling}}}}}').encode()
    answered, outs = every_tier(FLOAT_POLICIES[name], line)
    assert outs == [outs[0]] * 4 and answered == outs[0]
    meta = msgspec.json.decode(outs[0])["metadata"]
    if spelling in KEPT_FLOATS:
        assert meta == {"note": float(spelling)}
    else:
        assert meta == {"drop": {}, "narrow": {}, "default": {}, "mask": {"note": "[redacted]"},
                        "hash": {"note": tiers(POLICIES["hash"])[0].hash_value(str(WHOLE_FLOATS[spelling]))}}[name]


@pytest.mark.parametrize(("text", "strict"), [
    ("1.5", True), ("-999999999999999.9", True), ("1e-300", True), ("999999999999999.0", True),
    ("1e15", False), ("-1e15", False), ("1000000000000000.5", False), ("1e16", False), ("1.5e300", False),
])
def test_the_strict_tier_leaves_floats_of_16_digits_to_the_loose_tier(text, strict):
    """The strict Python tier keeps floats as msgspec decodes them (no check per event);
    one of 1e15 or more, in a leaf or a free-form map (typed levels, then the decoder's
    float_hook deeper down), fails its decode: the loose tier, which checks it, takes
    the line."""
    from auditshipd.redaction.fastpath import _small_float

    r = Redactor(compile_policy({"action": "mask"}).policy, c_tier=False)
    kept = float(text) if strict or not float(text).is_integer() else "[redacted]"
    leaf = (HEAD + f',"actor":{{"name":{text}}}}}').encode()
    nested = (HEAD + f',"metadata":{{"a":[{{"b":{text}}}]}}}}').encode()
    deep = (HEAD + f',"context":{{"a":{{"b":[{{"c":[{text}]}}]}}}}}}').encode()
    for line in (leaf, nested, deep):
        assert r.redact_line(line) == r.fast_path._loose(line) == msgspec.json.encode(r(msgspec.json.decode(line)))
    assert msgspec.json.decode(r.redact_line(leaf))["actor"] == {"name": kept}
    assert msgspec.json.decode(r.redact_line(nested))["metadata"] == {"a": [{"b": kept}]}
    assert msgspec.json.decode(r.redact_line(deep))["context"] == {"a": {"b": [{"c": [kept]}]}}
    if strict:
        assert _small_float(text) == msgspec.json.decode(text.encode())
    else:
        with pytest.raises(ValueError):
            _small_float(text)


def test_an_id_named_key_gives_any_float_the_action_once():
    """A key naming an id covers its value whatever its type: a float there gets the
    action as any value does (under hash, the hash of its JSON), not a second one."""
    line = (HEAD + ',"metadata":{"channel_id":1.2345678901234568e18,"user_id":1.5}}').encode()
    for name, raw in FLOAT_POLICIES.items():
        c, _ = tiers(raw)
        outs = every_tier(raw, line)[1]
        assert outs == [outs[0]] * 4
        meta = msgspec.json.decode(outs[0])["metadata"]
        if name == "hash":
            assert meta == {"channel_id": c.hash_value("1.2345678901234568e18"), "user_id": c.hash_value("1.5")}
        elif name == "mask":
            assert meta == {"channel_id": "[redacted]", "user_id": "[redacted]"}
        else:
            assert meta == {}


def test_whole_floats_without_the_long_number_pattern():
    """Without the long-number pattern the float is kept as sent, a float; a custom
    pattern that finds the digits (no prefilter: the Python tiers search every leaf)
    gives it the action."""
    line = (HEAD + ',"actor":{"name":1e16},"metadata":{"a":1.2345678901234568e18,"b":1234567890123456.0}}').encode()
    uuid_only = {"id_value_patterns": [DEFAULT_ID_VALUE_PATTERNS[0]]}
    answered, outs = all_outputs(uuid_only, line)
    assert answered == outs[0] == outs[1] == outs[2]
    assert msgspec.json.decode(outs[0]) == msgspec.json.decode(line)
    custom = compile_policy({"id_value_patterns": [r"[0-9]{16}"], "action": "mask"})
    assert custom.fast_path.c_plan is None
    outs = [custom.redact_line(line), custom.fast_path._loose(line), msgspec.json.encode(custom(msgspec.json.decode(line)))]
    assert outs == [outs[0]] * 3
    out = msgspec.json.decode(outs[0])
    assert out["actor"] == {"name": "[redacted]"} and out["metadata"] == {"a": "[redacted]", "b": "[redacted]"}


big = st.one_of(st.integers(-(10**20), -(10**15)), st.integers(10**15, 10**20),
                st.integers(-(10**15), 10**15), st.floats(allow_nan=False, allow_infinity=False),
                st.integers(-(10**20), 10**20).map(float), st.floats(-(10**16), 10**16))
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
        assert not (type(x) is float and abs(x) >= BIG_INT and x.is_integer())


def test_the_c_number_path_leaks_nothing():
    """Kept, removed, masked and hashed long integers and whole floats: no memory or
    reference left behind."""
    from c_leaks import assert_no_leak

    from auditshipd.redaction.ids import DROP

    line = (HEAD + ',"actor":{"name":1234567890123456},"metadata":{"a":[823456789012345678,5],'
            '"b":-4111111111111111,"c":999999999999999,"d":[1.2345678901234568e18,1e16,1.5]}}').encode()
    short = (HEAD + ',"metadata":{"a":823456789012345678,"d":1e16}}').encode()
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
