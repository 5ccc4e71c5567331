"""The canonical form, the chain and the digests as the library builds them."""

from __future__ import annotations

import json

import msgspec
import pytest
from tests.helpers.integrity_stream import build_stream

from auditshipd.integrity.chain import ChainState, StreamChain, event_hash, genesis, unseal
from auditshipd.integrity.keys import generate_key, load_signing_key, parse_public_key
from auditshipd.integrity.verify import StreamVerifier


def test_seal_adds_a_linked_integrity_member_and_keeps_the_event_bytes():
    """A sealed line is the integrity member {seq, hash, prev} followed by the event's own
    bytes; seq counts from 1, prev of seq 1 is the genesis, each hash is the next one's
    prev and the SHA-256 of seq, prev and the event bytes; an event's own 'integrity'
    member is dropped (reserved)."""
    chain = StreamChain(ChainState(stream="acme.siem"))
    lines = [b'{"id":"a","x":1.5e+16}', b'{"id":"b","integrity":"forged"}', b"{}"]
    sealed = [chain.seal(line) for line in lines]
    parts = [unseal(x) for x in sealed]
    assert [p[0] for p in parts] == [1, 2, 3]
    assert parts[0][2] == genesis("acme.siem")
    for prev, cur in zip(parts, parts[1:], strict=False):
        assert cur[2] == prev[1]
    assert [p[3] for p in parts] == [lines[0], b'{"id":"b"}', b"{}"]
    for seq, digest, prev, event_bytes in parts:
        assert digest == event_hash(seq, prev, event_bytes)
    assert json.loads(sealed[0]) == {"integrity": {"seq": 1, "hash": parts[0][1],
                                                   "prev": parts[0][2]}, "id": "a", "x": 1.5e16}
    assert json.loads(sealed[2])["integrity"]["seq"] == 3


def test_chain_resumed_from_saved_state_gives_identical_lines():
    """A chain restored from a snapshot (the cursor's) seals the same lines with the same
    seq and hash as the chain that went on: a crash re-send is a duplicate, not a fork."""
    chain = StreamChain(ChainState(stream="s"))
    chain.seal(b'{"id":"1"}')
    saved = chain.snapshot().to_dict()
    first = [chain.seal(b'{"id":"2"}'), chain.seal(b'{"id":"3"}')]
    again = StreamChain(ChainState.from_dict(saved))
    assert [again.seal(b'{"id":"2"}'), again.seal(b'{"id":"3"}')] == first


def test_keygen_file_is_private_and_loads(tmp_path):
    """keygen writes a 0600 PEM that loads back to the same key id; the .pub beside it
    parses to the same id; an existing file is never overwritten."""
    key = generate_key(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert load_signing_key(str(tmp_path / "k")).key_id == key.key_id
    assert parse_public_key((tmp_path / "k.pub").read_text()).key_id == key.key_id
    assert parse_public_key(key.public.base64()).key_id == key.key_id
    with pytest.raises(FileExistsError):
        generate_key(tmp_path / "k")


def test_intact_stream_verifies_with_duplicates_counted(tmp_path):
    """An intact stream with a crash-style re-send of a run of events verifies; the
    re-sent events are counted as duplicates."""
    key = generate_key(tmp_path / "k")
    built = build_stream(key, 23)
    lines = built.lines[:10] + built.lines[5:]
    v = StreamVerifier([key.public], now=built.verify_at)
    for i, line in enumerate(lines):
        v.add(line, f"x:{i + 1}")
    report = v.finish()
    assert report.ok, report.problems
    resent = sum(1 for i in range(5, 10) if not built.is_digest(i))
    assert report.events == 23 and report.duplicates == resent and report.stream == "siem"


def test_key_rotation_verifies_with_both_public_keys(tmp_path):
    """A stream whose signing key was switched mid-way verifies with both public keys;
    with only the new one, the old digests are reported as signed by an unknown key."""
    from auditshipd.integrity.digest import DigestPolicy
    from auditshipd.integrity.sealer import StreamSealer

    old, new = generate_key(tmp_path / "old"), generate_key(tmp_path / "new")
    sealer = StreamSealer("siem", old, DigestPolicy(60, 3))
    lines = []
    for i in range(12):
        if i == 6:  # restart with the new key, from the committed state
            sealer = StreamSealer("siem", new, DigestPolicy(60, 3), sealer.snapshot())
        lines.append(sealer.seal(msgspec.json.encode({"id": str(i)})))
        if sealer.digest_due(1000.0 + i):
            lines.append(sealer.digest(1000.0 + i))
    lines.append(sealer.digest(1020.0))

    def verify(keys):
        v = StreamVerifier(keys, now=1030.0)
        for i, line in enumerate(lines):
            v.add(line, f"x:{i + 1}")
        return v.finish()

    both = verify([old.public, new.public])
    assert both.ok, both.problems
    assert sorted(both.key_ids) == sorted([old.key_id, new.key_id])
    only_new = verify([new.public])
    assert {p.kind for p in only_new.problems} >= {"unknown-key"}
