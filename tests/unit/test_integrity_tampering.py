"""Property tests: any tampering with a verified stream makes `verify` fail, naming the
kind of problem (hypothesis picks the stream, the tampering and where)."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tests.helpers.integrity_stream import BuiltStream, build_stream

from auditshipd.integrity.chain import event_hash, unseal
from auditshipd.integrity.digest import signed_payload
from auditshipd.integrity.keys import generate_key
from auditshipd.integrity.verify import StreamVerifier

_settings = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return generate_key(d / "k"), generate_key(d / "other")


def verify(lines: list[bytes], key, at: float):
    v = StreamVerifier([key.public], now=at)
    for i, line in enumerate(lines, 1):
        v.add(line, f"x:{i}")
    return v.finish()


streams = st.builds(lambda n, d: (n, d), st.integers(2, 30), st.integers(2, 8))


def _build(keys, spec) -> BuiltStream:
    n, every = spec
    return build_stream(keys[0], n, digest_events=every)


@_settings
@given(spec=streams)
def test_intact_stream_verifies(keys, spec):
    """Without tampering the stream verifies."""
    built = _build(keys, spec)
    report = verify(built.lines, keys[0], built.verify_at)
    assert report.ok, report.problems


@_settings
@given(spec=streams, data=st.data())
def test_edited_byte_is_detected(keys, spec, data):
    """One byte of one event line changed to another printable byte: modified (or, when
    the byte was in the integrity member itself, inserted / unreadable)."""
    built = _build(keys, spec)
    i = data.draw(st.sampled_from(built.event_indexes()))
    line = bytearray(built.lines[i])
    pos = data.draw(st.integers(0, len(line) - 1))
    new = data.draw(st.sampled_from(b"abcXYZ019{}:,\" ").filter(lambda b: b != line[pos]))
    line[pos] = new
    lines = [*built.lines]
    lines[i] = bytes(line)
    report = verify(lines, keys[0], built.verify_at)
    assert not report.ok
    assert {p.kind for p in report.problems} & {"modified", "unreadable", "inserted"}


@_settings
@given(spec=streams, data=st.data())
def test_edited_field_is_named_modified_with_its_seq(keys, spec, data):
    """A field of one event changed (valid JSON): 'modified' naming that event's seq."""
    built = _build(keys, spec)
    i = data.draw(st.sampled_from(built.event_indexes()))
    record = json.loads(built.lines[i])
    record["actor"]["email"] = "mallory@example.com"
    lines = [*built.lines]
    lines[i] = msgspec.json.encode(record)
    report = verify(lines, keys[0], built.verify_at)
    assert ("modified", record["integrity"]["seq"]) in {(p.kind, p.seq) for p in report.problems}


@_settings
@given(spec=streams, data=st.data())
def test_rewritten_chain_is_caught_by_the_digest_head(keys, spec, data):
    """An event edited and the chain recomputed from there to the end (all hashes
    consistent): the digests' signed heads no longer match: 'modified'."""
    built = _build(keys, spec)
    idx = built.event_indexes()
    start = data.draw(st.sampled_from(idx))
    lines, prev = [*built.lines], None
    for i in idx:
        if i < start:
            continue
        seq, _, old_prev, event_bytes = unseal(lines[i])
        if i == start:
            event_bytes = event_bytes.replace(b"user.login", b"user.logout")
        prev = prev or old_prev
        digest = event_hash(seq, prev, event_bytes)
        lines[i] = (b'{"integrity":{"seq":%d,"hash":"%s","prev":"%s"},' % (
            seq, digest.encode(), prev.encode())) + event_bytes[1:]
        prev = digest
    report = verify(lines, keys[0], built.verify_at)
    assert "modified" in {p.kind for p in report.problems}


@_settings
@given(spec=streams, data=st.data())
def test_deleted_event_is_a_gap(keys, spec, data):
    """One event deleted: a gap naming its seq."""
    built = _build(keys, spec)
    i = data.draw(st.sampled_from(built.event_indexes()))
    seq = json.loads(built.lines[i])["integrity"]["seq"]
    report = verify(built.lines[:i] + built.lines[i + 1:], keys[0], built.verify_at)
    assert ("gap", seq) in {(p.kind, p.seq) for p in report.problems}


@_settings
@given(spec=streams, data=st.data())
def test_inserted_event_is_detected(keys, spec, data):
    """A line inserted anywhere: a plain event, or a copy of an event with other content
    under the same integrity member: 'inserted'."""
    built = _build(keys, spec)
    where = data.draw(st.integers(0, len(built.lines)))
    if data.draw(st.booleans()):
        extra = b'{"id":"forged","action":"user.login"}'
    else:
        record = json.loads(built.lines[data.draw(st.sampled_from(built.event_indexes()))])
        record["metadata"]["n"] = -1
        extra = msgspec.json.encode(record)
    lines = built.lines[:where] + [extra] + built.lines[where:]
    report = verify(lines, keys[0], built.verify_at)
    assert {p.kind for p in report.problems} & {"inserted", "modified"}
    assert "inserted" in {p.kind for p in report.problems} or extra.startswith(b'{"integ')


@_settings
@given(spec=streams, data=st.data())
def test_swapped_events_are_reordered(keys, spec, data):
    """Two events swapped: 'reordered' naming the one that came late."""
    built = _build(keys, spec)
    a, b = sorted(data.draw(st.lists(st.sampled_from(built.event_indexes()), min_size=2,
                                     max_size=2, unique=True)))
    lines = [*built.lines]
    lines[a], lines[b] = lines[b], lines[a]
    report = verify(lines, keys[0], built.verify_at)
    late = json.loads(built.lines[a])["integrity"]["seq"]
    assert ("reordered", late) in {(p.kind, p.seq) for p in report.problems}


@_settings
@given(spec=streams, data=st.data())
def test_truncated_stream_is_detected(keys, spec, data):
    """The stream cut after any line before its last event: the tail is reported (the
    newest remaining digest is older than two intervals) or the cut is a gap."""
    built = _build(keys, spec)
    last_event = built.event_indexes()[-1]
    cut = data.draw(st.integers(0, last_event))
    report = verify(built.lines[:cut], keys[0], built.verify_at)
    assert {p.kind for p in report.problems} & {"tail", "gap"}


@_settings
@given(spec=streams, data=st.data())
def test_digest_replayed_from_another_stream_is_detected(keys, spec, data):
    """A valid digest, signed with the same key, of another stream inserted: 'other-stream'."""
    built = _build(keys, spec)
    other = build_stream(keys[0], spec[0], stream="billing", digest_events=spec[1])
    foreign = data.draw(st.sampled_from([x for i, x in enumerate(other.lines)
                                         if other.is_digest(i)]))
    where = data.draw(st.integers(0, len(built.lines)))
    lines = built.lines[:where] + [foreign] + built.lines[where:]
    report = verify(lines, keys[0], built.verify_at)
    assert "other-stream" in {p.kind for p in report.problems}


@_settings
@given(spec=streams, data=st.data())
def test_digest_resigned_with_another_key_is_detected(keys, spec, data):
    """A digest re-signed with a key the verifier does not trust, under its own key id
    ('unknown-key') or under the trusted key's id ('bad-signature')."""
    built = _build(keys, spec)
    i = data.draw(st.sampled_from([i for i in range(len(built.lines)) if built.is_digest(i)]))
    record = json.loads(built.lines[i])
    digest = record["digest"]
    if data.draw(st.booleans()):
        digest["key_id"] = keys[1].key_id
        expected = "unknown-key"
    else:
        expected = "bad-signature"
    digest["signature"] = keys[1].sign(signed_payload(digest))
    lines = [*built.lines]
    lines[i] = msgspec.json.encode(record)
    report = verify(lines, keys[0], built.verify_at)
    assert expected in {p.kind for p in report.problems}


@_settings
@given(spec=streams, data=st.data())
def test_deleted_digest_breaks_the_digest_chain(keys, spec, data):
    """A digest other than the last deleted: the next one's previous digest is missing."""
    built = _build(keys, spec)
    digests = [i for i in range(len(built.lines)) if built.is_digest(i)]
    assume(len(digests) >= 2)
    i = data.draw(st.sampled_from(digests[:-1]))
    report = verify(built.lines[:i] + built.lines[i + 1:], keys[0], built.verify_at)
    assert "digest-chain" in {p.kind for p in report.problems}
