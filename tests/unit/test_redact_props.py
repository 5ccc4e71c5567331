"""Property tests: planted internal ids never reach the output bytes."""

from __future__ import annotations

import string

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditshipd.redaction.redactor import compile_policy

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POLICIES = {
    "drop": compile_policy({}),
    "mask": compile_policy({"action": "mask"}),
    "hash": compile_policy({"action": "hash", "hash_key": "property-test-key-0123456789"}),
}
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ALNUM = string.ascii_letters + string.digits

# -- internal ids --------------------------------------------------------------------------

ulid = st.builds(lambda first, rest: first + rest, st.sampled_from("01234567"),
                 st.text(CROCKFORD, min_size=25, max_size=25))
prefixed = st.builds(
    lambda p, u: f"{p}_{u}",
    st.sampled_from(["usr", "user", "org", "om", "conn", "directory_user", "sk_live", "invitation",
                     "session", "api_key", "evt"]),
    ulid,
)
uuids = st.uuids().map(str)
hexes = st.binary(min_size=12, max_size=32).map(bytes.hex)
b64_token = st.builds(lambda a, s: "aZ9" + s + a, st.text(ALNUM, min_size=1, max_size=4),
                      st.text(ALNUM + "_-", min_size=29, max_size=60))
numeric = st.integers(min_value=10**15, max_value=10**20).map(str)
internal_id = st.one_of(prefixed, uuids, hexes, ulid, b64_token, numeric)
# Snowflake ids and card numbers written as JSON numbers.
big_int = st.one_of(st.integers(min_value=10**15, max_value=10**20),
                    st.integers(min_value=-(10**20), max_value=-(10**15)))
bearer = st.builds(lambda t: ("Bearer " + t, t), b64_token)

# -- customer-facing values ----------------------------------------------------------------

word = st.text(string.ascii_lowercase, min_size=2, max_size=10)
names = st.builds(lambda a, b: f"{a.title()} {b.title()}", word, word)
slugs = st.lists(word, min_size=1, max_size=4).map("-".join)


def _urlless(email: str) -> str:
    # The e-mail keep pattern leaves "/ ? = & #" out of the local part (so that a URL's
    # path or query never starts a kept span, docs/redaction.md): RFC 5322 allows them,
    # customers' addresses do not use them.
    local, _, domain = email.rpartition("@")
    return "".join("x" if c in "/?=&#" else c for c in local) + "@" + domain


emails = st.emails().map(_urlless)
filler = st.text(string.ascii_letters + string.digits + " .,:;!?()'\"/@#-", max_size=24)
safe_scalar = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=False),
                        st.text(string.ascii_letters + " .,-", max_size=15))
any_key = st.text(min_size=1, max_size=12)


# The generators below draw through plain functions (``_planted(draw, ids)``) rather than
# building a new strategy for every node of every tree: hypothesis validates each strategy
# it is given, which took most of the time of the tests that use them.
_PICK_LEAF = st.integers(0, 6)  # like one_of(safe_scalar, planted, planted_number): 5 + 1 + 1
_COIN3 = st.integers(0, 2)
_SHAPE = st.integers(0, 3)
_LIST_LEN = st.integers(0, 4)
_KEYS = st.integers(0, 5)


def _planted(draw: st.DrawFn, ids: list[str]) -> object:
    kind = draw(_COIN3)
    if kind == 0:
        value = draw(internal_id)
        ids.append(value)
        return value
    if kind == 1:
        text, secret = draw(bearer)
        ids.append(secret)
        return f"{draw(filler)} {text} {draw(filler)}"
    value = draw(internal_id)
    ids.append(value)
    return f"{draw(filler)} {value} {draw(filler)}"


def _planted_number(draw: st.DrawFn, ids: list[str]) -> int:
    number = draw(big_int)
    ids.append(str(abs(number)))
    return number


def _leaf(draw: st.DrawFn, ids: list[str]) -> object:
    """A safe scalar, a planted id or a planted number."""
    pick = draw(_PICK_LEAF)
    if pick < 5:
        return draw(safe_scalar)
    return _planted(draw, ids) if pick == 5 else _planted_number(draw, ids)


def _free_form(draw: st.DrawFn, ids: list[str], depth: int = 0) -> object:
    if depth >= 4:
        return _leaf(draw, ids)
    shape = draw(_SHAPE)
    if shape == 0:
        return _leaf(draw, ids)
    if shape == 1:
        return [_free_form(draw, ids, depth + 1) for _ in range(draw(_LIST_LEN))]
    out: dict[str, object] = {}
    for _ in range(draw(_KEYS)):
        if draw(_KEYS) == 0:  # a map keyed by an id
            key = draw(internal_id)
            ids.append(key)
        else:
            key = draw(any_key)
        out[key] = _free_form(draw, ids, depth + 1)
    return out


@st.composite
def planted(draw, ids: list[str]) -> object:
    """A value that is, or contains, a freshly generated internal id (recorded in ids)."""
    return _planted(draw, ids)


@st.composite
def planted_number(draw, ids: list[str]) -> int:
    """An integer of 16+ digits (recorded in ids as its digits)."""
    return _planted_number(draw, ids)


@st.composite
def free_form(draw, ids: list[str], depth: int = 0) -> object:
    """A metadata-like tree with ids planted at any depth, as values, in strings, as keys."""
    return _free_form(draw, ids, depth)


@st.composite
def events(draw) -> tuple[dict, list[str]]:
    ids: list[str] = []
    actor_id, org_id = draw(internal_id), draw(internal_id)
    ids += [actor_id, org_id]
    targets = []
    for _ in range(draw(st.integers(0, 3))):
        tid = draw(internal_id)
        ids.append(tid)
        targets.append({"type": "user", "id": tid, "email": draw(emails), "name": draw(names)})
    ev = {
        "id": draw(ulid),
        "action": draw(st.sampled_from(["user.provisioned", "user.deprovisioned", "user.invited",
                                        "organization_membership.role_changed", "dsync.user.updated"])),
        "occurred_at": "2024-05-01T09:00:00.000Z",
        "version": 1,
        "actor": {"type": "user", "id": actor_id, "email": draw(emails), "name": draw(names)},
        "organization": {"id": org_id, "slug": draw(slugs), "name": draw(names)},
        "targets": targets,
        "context": {"location": "203.0.113.7", "extra": _free_form(draw, ids)},
        "metadata": {str(i): _free_form(draw, ids) for i in range(draw(st.integers(1, 4)))},
    }
    ev["metadata"]["note"] = _planted(draw, ids)
    ev["metadata"]["session_id"] = draw(internal_id)  # id-named key, non-id-looking or not
    ids.append(ev["metadata"]["session_id"])
    return ev, ids


@SETTINGS
@given(data=events())
def test_planted_ids_never_in_output_bytes(data):
    """Ids planted anywhere (values, keys, lists, inside strings) are absent from the output bytes."""
    ev, ids = data
    for mode, redactor in POLICIES.items():
        out_event = redactor(ev)
        # The event id and the emails are kept verbatim by design; blank them so that a
        # planted "000..." cannot match a generated "0000...@a.com".
        out_event = {**out_event, "id": "EVENT-ID", "actor": {**out_event["actor"], "email": "E"},
                     "targets": [{**t, "email": "E"} for t in out_event["targets"]]}
        out = msgspec.json.encode(out_event)
        for planted_id in ids:
            assert planted_id.encode() not in out, (mode, planted_id, out)


@SETTINGS
@given(data=events())
def test_customer_fields_unchanged(data):
    """Top-level id/action/occurred_at, emails, names, slugs arrive exactly as sent."""
    ev, _ = data
    for redactor in POLICIES.values():
        _check_customer_fields(ev, redactor(ev))


def _check_customer_fields(ev: dict, out: dict) -> None:
    for key in ("id", "action", "occurred_at", "version"):
        assert out[key] == ev[key]
    assert out["actor"] == {k: ev["actor"][k] for k in ("type", "email", "name")}
    assert out["organization"] == {"slug": ev["organization"]["slug"], "name": ev["organization"]["name"]}
    assert out["targets"] == [{k: t[k] for k in ("type", "email", "name")} for t in ev["targets"]]
    assert out["context"]["location"] == "203.0.113.7"


@settings(max_examples=40, deadline=None)
@given(data=events())
def test_redaction_is_idempotent(data):
    """Redacting an already redacted event changes nothing."""
    ev, _ = data
    for redactor in POLICIES.values():
        once = redactor(ev)
        assert redactor(once) == once
