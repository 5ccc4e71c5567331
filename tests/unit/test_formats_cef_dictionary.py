"""CEF against the ArcSight extension dictionary: an IPv6 source address goes to ``c6a2``
(labelled; ``src`` is IPv4, an IPv4-mapped address included), and values are cut to the dictionary's maximum lengths
(characters, before escaping), the same in every tier."""

from __future__ import annotations

import os
import re
from typing import Any
from unittest import mock

import msgspec
import pytest

from auditshipd.formats import _formats_c  # the suite builds it (scripts/test.sh)
from auditshipd.formats.cef import CefEncoder
from auditshipd.formats.registry import build_encoder

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_PAIR = re.compile(r"(\w+)=((?:\\.|[^\\=])*?)(?= \w+=|$)")
_UNESCAPE = {"\\\\": "\\", "\\=": "=", "\\n": "\n", "\\r": "\r"}


def tiers() -> list[Any]:
    """C, the typed view, the reference: each a function of lines."""
    with_c = build_encoder("cef")
    with mock.patch.dict(os.environ, {"AUDITSHIPD_FORMATS_C": "0"}):
        without = build_encoder("cef")
    assert with_c._c is _formats_c and without._c is None
    ref = build_encoder("cef")
    return [with_c.encode_lines, without.encode_lines,
            lambda lines: [CefEncoder.encode(ref, _decode(x)) for x in lines]]


def encoded(**kw: Any) -> tuple[str, dict[str, str]]:
    """(the header, the extension's pairs unescaped) of one event, the same in every
    tier."""
    e = {"id": "e1", "action": "user.signed_in", "occurred_at": "2024-05-01T12:00:00Z",
         "actor": {"type": "user", "email": "a@b.test"}, **kw}
    lines = [_encode(e)]
    outs = [encode(lines) for encode in tiers()]
    assert outs[0] == outs[1] == outs[2]
    line = outs[0][0].decode()
    head, _, ext = line.rpartition("|")
    pairs = {k: re.sub(r"\\[\\=nr]", lambda m: _UNESCAPE[m[0]], v)
             for k, v in _PAIR.findall(ext)}
    return head, pairs


@pytest.mark.parametrize("location,want", [("2001:DB8:0::1", "2001:db8::1"),
                                           ("fe80::1%eth0", "fe80::1")])
def test_an_ipv6_source_goes_to_c6a2_with_its_label(location, want):
    _, pairs = encoded(context={"location": location})
    assert pairs["c6a2"] == want and pairs["c6a2Label"] == "Source IPv6 Address"
    assert "src" not in pairs


@pytest.mark.parametrize("location", ["192.0.2.44", "::ffff:192.0.2.44", "::FFFF:C000:022C",
                                      "::ffff:192.0.2.44%eth0"])
def test_an_ipv4_source_stays_in_src(location):
    """An IPv4 address, or an IPv4-mapped IPv6 one (an IPv4 client seen by a dual-stack
    server), is ``src``, dotted."""
    _, pairs = encoded(context={"location": location})
    assert pairs["src"] == "192.0.2.44" and "c6a2" not in pairs and "c6a2Label" not in pairs


def test_values_are_cut_to_the_dictionarys_maximum_lengths():
    """Each key at its limit: a value one character over is cut, characters counted as
    characters (not UTF-8 bytes, not escaped), JSON metadata included."""
    action = "x." + "a" * 1100
    _, short = encoded(id="i" * 40, actor={"type": "t" * 4000, "email": "é" * 1023},
                       targets=[{"type": "user", "name": "n" * 1023}],
                       context={"user_agent": "u" * 1023}, organization={"slug": "s" * 4000})
    assert (len(short["externalId"]), len(short["suser"]), len(short["duser"]),
            len(short["cs4"]), len(short["requestClientApplication"]),
            len(short["cs1"])) == (40, 1023, 1023, 4000, 1023, 4000)
    head, pairs = encoded(action=action, id="i" * 41,
                          actor={"type": "t" * 4001, "email": "é" * 1024},
                          targets=[{"type": "user", "name": "n=" * 600}],
                          context={"user_agent": "\\" * 1500},
                          organization={"slug": "s" * 4001, "name": "ü" * 4500},
                          metadata={"note": "m" * 5000})
    assert pairs["act"] == action[:63]
    assert head.split("|")[4] == action[:1023]
    assert pairs["externalId"] == "i" * 40
    assert pairs["suser"] == "é" * 1023 and pairs["cs4"] == "t" * 4000
    assert pairs["duser"] == ("n=" * 600)[:1023]
    assert pairs["requestClientApplication"] == "\\" * 1023
    assert pairs["cs1"] == "s" * 4000 and pairs["cs2"] == "ü" * 4000
    assert pairs["cs3"] == _encode({"note": "m" * 5000}).decode()[:4000]


def test_values_within_the_limits_are_written_in_c():
    """Long values under the limits (up to 1023 bytes of a user agent) stay in C; a longer
    one is handed to Python, which cuts it."""
    line = _encode({"id": "e1", "action": "user.signed_in",
                    "context": {"user_agent": "u" * 1023}, "metadata": {"k": "v" * 3000}})
    enc = build_encoder("cef")
    _formats_c.handed_back()
    enc.encode_lines([line])
    assert _formats_c.handed_back() == 0
    enc.encode_lines([line.replace(b"u" * 1023, b"u" * 1024)])
    assert _formats_c.handed_back() == 1
