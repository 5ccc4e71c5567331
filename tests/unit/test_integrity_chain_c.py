"""The C hash chain (integrity/_chain_c.c) against the reference (StreamChain.seal and
hashlib): the same SHA-256 on both of its code paths (SHA extensions and portable), the
same sealed bytes and chain state for every line, with and without the extension."""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditshipd.integrity import _chain_c  # the suite builds it (scripts/test.sh)
from auditshipd.integrity import chain as chain_mod
from auditshipd.integrity.chain import ChainState, StreamChain, unseal


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=700), cut=st.integers(0, 700))
def test_sha256_matches_hashlib_on_every_length(data, cut):
    """Every length and split of the input (block boundaries, padding into a second
    block): the hex digest is hashlib's, on both code paths."""
    for on in (True, False):
        _chain_c.accelerated(on)
        assert _chain_c.sha256_hex(data) == hashlib.sha256(data).hexdigest().encode()
    _chain_c.accelerated(True)
    assert _chain_c.sha256_hex(bytes(range(256)) * 40) == \
        hashlib.sha256(bytes(range(256)) * 40).hexdigest().encode()


_value = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                      lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                         c, max_size=3),
                      max_leaves=10)
_line = st.one_of(
    st.dictionaries(st.sampled_from(["id", "action", "integrity", "x", "note"]), _value,
                    max_size=4).map(msgspec.json.encode),
    st.sampled_from([b"{}", b"{", b' {"a":1}', b'{"a":"integrity"}', b"",
                     b'{"a":"\\"integrity\\""}', b'{"integrity":{"seq":1}}']),
    st.binary(max_size=40).map(lambda b: b"{" + b))


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(_line, max_size=12), seq=st.integers(0, 10**6))
def test_seal_lines_writes_what_seal_writes(lines, seq):
    """Any run of lines (a reserved member, odd first bytes, empty objects, random bytes):
    seal_lines in C gives the bytes and the chain state that seal() gives line by line,
    on both SHA-256 code paths."""
    state = {"stream": "acme.siem", "seq": seq, "head": "" if seq == 0 else "ab" * 32}
    ref = StreamChain(ChainState.from_dict(state), use_c=False)
    expected = [ref.seal(x) for x in lines]
    for accelerated in (True, False):
        _chain_c.accelerated(accelerated)
        fast = StreamChain(ChainState.from_dict(state))
        assert fast._c is _chain_c
        assert fast.seal_lines(lines) == expected
        assert fast.snapshot() == ref.snapshot()
    _chain_c.accelerated(True)
    for sealed in expected:
        if sealed.startswith(b'{"integrity":'):
            assert unseal(sealed) is not None


def test_seal_lines_without_the_extension_is_the_reference(monkeypatch):
    """AUDITSHIPD_CHAIN_C=0 (or an install without a C compiler) seals in Python: the
    same bytes as the C path."""
    lines = [b'{"id":"%d","note":"%s"}' % (i, b"x" * i) for i in range(200)]
    with_c = StreamChain(ChainState(stream="s")).seal_lines(lines)
    monkeypatch.setenv("AUDITSHIPD_CHAIN_C", "0")
    assert chain_mod.chain_c() is None
    without = StreamChain(ChainState(stream="s"))
    assert without._c is None
    assert without.seal_lines(lines) == with_c
    monkeypatch.setattr(chain_mod, "_built_c", None)
    monkeypatch.delenv("AUDITSHIPD_CHAIN_C")
    assert StreamChain(ChainState(stream="s")).seal_lines(tuple(lines)) == with_c


def test_seal_run_rejects_a_head_longer_than_a_digest():
    """A corrupt saved head is an error, never a buffer overrun."""
    with pytest.raises(ValueError, match="head"):
        _chain_c.seal_run([b"{}"], 0, 0, b"x" * 65, [])


def test_no_memory_or_reference_leak_over_many_calls():
    """A debug loop over seal_lines (lines sealed in C, lines left to seal(), a bad head):
    after thousands of rounds no memory is left allocated beyond the sealed output kept,
    and no reference is left on the input lines."""

    from c_leaks import assert_no_leak

    lines = [b'{"id":"%d","note":"%s"}' % (i, b"x" * i) for i in range(40)]
    # fresh objects: constants of the code may be shared, so their counts move elsewhere
    lines += [b"%s" % x for x in (b"{}", b' {"a":1}', b'{"integrity":1,"a":2}')]

    def run() -> None:
        StreamChain(ChainState(stream="s")).seal_lines(lines)
        with pytest.raises(ValueError):
            _chain_c.seal_run(lines, 0, 0, b"x" * 65, [])
        with pytest.raises(TypeError):
            _chain_c.seal_run(tuple(lines), 0, 0, b"", [])

    assert_no_leak(run, lines)


def test_a_line_that_is_not_json_but_names_the_reserved_member_is_sealed_as_it_is():
    """``{"integrity"`` (no JSON object to remove a member from): sealed as it is, the
    same in C and in Python, where it used to raise."""
    state = {"stream": "acme.siem", "seq": 0, "head": ""}
    lines = [b'{"integrity"', b'{"a":1}']
    ref = StreamChain(ChainState.from_dict(state), use_c=False)
    expected = [ref.seal(x) for x in lines]
    assert expected[0].endswith(b',"integrity"')
    assert StreamChain(ChainState.from_dict(state)).seal_lines(lines) == expected
