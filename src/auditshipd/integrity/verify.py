"""Check a stream as the customer holds it: every event's hash, the links between
events, the sequence (gaps, insertions, reordering, duplicates), the digests'
signatures, their chain and their heads, and that the tail is covered by a recent
digest. Offline: it needs the records and the public keys, nothing else.

Records are fed in the order they were received (:meth:`StreamVerifier.add`);
:meth:`StreamVerifier.finish` returns a :class:`Report` naming each problem with its
seq and where it was read (``FILE:LINE``).
"""

from __future__ import annotations

import base64
import binascii
import collections
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..timestamps import parse_time
from .canonical import RESERVED_KEY
from .chain import MAX_SEQ, event_hash, genesis, unseal
from .digest import DIGEST_ACTION, rfc3339, signed_payload
from .keys import PublicKey

__all__ = ["Problem", "Report", "StreamVerifier"]

_decode = msgspec.json.Decoder().decode

_DIGEST_FIELDS = {"version": int, "stream": str, "first_seq": int, "last_seq": int,
                  "head": str, "prev_signature": str, "time": str, "interval": (int, float),
                  "key_id": str, "signature": str}


@dataclass(frozen=True)
class Problem:
    """``kind`` is one of: unreadable, inserted, modified, gap, reordered, tail,
    bad-signature, unknown-key, digest-chain, other-stream."""

    kind: str
    where: str
    message: str
    seq: int | None = None

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.message}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    stream: str | None = None
    events: int = 0
    duplicates: int = 0
    digests: int = 0
    last_seq: int = 0
    key_ids: list[str] = field(default_factory=list)
    newest_digest: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        keys = ", ".join(self.key_ids) or "none"
        state = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        return (f"{state}: stream {self.stream or '?'}: {self.events} events (seq 1-"
                f"{self.last_seq}), {self.duplicates} duplicate(s), {self.digests} digest(s)"
                f" signed by {keys}, newest digest {self.newest_digest or 'none'}")


@dataclass
class _Digest:
    where: str
    body: dict[str, Any]
    valid: bool = False


def _parse_time(text: str) -> float | None:
    return parse_time(text)


class StreamVerifier:
    """Verifies one stream. ``now`` (Unix seconds) is when the tail must have been
    covered by a digest; ``allow_reorder`` accepts events that arrive after later
    ones (several batches in flight, dead letters replayed)."""

    def __init__(self, keys: Iterable[PublicKey], *, now: float | None = None,
                 allow_reorder: bool = False, stream: str | None = None):
        self.keys = {k.key_id: k for k in keys}
        self.now = time.time() if now is None else now
        self.allow_reorder = allow_reorder
        self.stream = stream
        self.problems: list[Problem] = []
        self.hashes: dict[int, str] = {}
        self.prevs: dict[int, str] = {}
        self.where: dict[int, str] = {}
        self.next_seq = 1
        self.duplicates = 0
        self.digests: list[_Digest] = []

    def _problem(self, kind: str, where: str, message: str, seq: int | None = None) -> None:
        self.problems.append(Problem(kind, where, message, seq))

    def add_unreadable(self, where: str, reason: str) -> None:
        self._problem("unreadable", where, reason)

    def add(self, line: bytes, where: str) -> None:
        """One received line (its exact bytes, without the newline)."""
        sealed = unseal(line)
        if sealed is None:
            self._add_other(line, where)
            return
        seq, claimed, prev, event_bytes = sealed
        if seq > MAX_SEQ:  # no sealer gets there: a forged line, not a gap of 2^62 events
            shown = f"seq {seq}" if seq < 10 ** 19 else "a seq of more than 19 digits"
            self._problem("inserted", where, f"{shown} is beyond the largest a stream"
                          f" reaches (2^62): not written by a sealer")
            return
        actual = event_hash(seq, prev, event_bytes)
        seen = self.hashes.get(seq)
        if seen is not None:
            if seen == claimed and actual == claimed:
                self.duplicates += 1
            else:
                self._problem("inserted", where, f"seq {seq} again with other content"
                              f" (first at {self.where[seq]})", seq)
            return
        if actual != claimed:
            self._problem("modified", where, f"seq {seq}: content does not match its hash",
                          seq)
        self.hashes[seq], self.prevs[seq], self.where[seq] = claimed, prev, where
        if seq < self.next_seq and not self.allow_reorder:
            self._problem("reordered", where, f"seq {seq} arrived after seq"
                          f" {self.next_seq - 1}", seq)
        self.next_seq = max(self.next_seq, seq + 1)

    def _add_other(self, line: bytes, where: str) -> None:
        try:
            record = _decode(line)
        except msgspec.DecodeError as exc:
            self._problem("unreadable", where, f"not JSON ({exc})")
            return
        if not isinstance(record, dict):
            self._problem("inserted", where, "not a JSON object")
        elif record.get("action") == DIGEST_ACTION and RESERVED_KEY not in record:
            self.digests.append(_Digest(where, record.get("digest")))  # type: ignore[arg-type]
        else:
            self._problem("inserted", where, "event without a valid integrity member first"
                          f" (id {str(record.get('id'))[:80]!r})")

    # -- the end of the input ---------------------------------------------------------

    def finish(self) -> Report:
        stream = self._check_digests()
        self._check_sequence(stream)
        report = Report(problems=self.problems, stream=stream, events=len(self.hashes),
                        duplicates=self.duplicates,
                        digests=sum(1 for d in self.digests if d.valid),
                        last_seq=max(self.hashes, default=0))
        valid = [d.body for d in self.digests if d.valid]
        report.key_ids = sorted({d["key_id"] for d in valid})
        self._check_tail(valid, report)
        return report

    def _check_sequence(self, stream: str | None) -> None:
        hashes, prevs = self.hashes, self.prevs
        # Events a digest covers count too: a cut tail of a digested range is a gap.
        last = max([*hashes, *(d.body["last_seq"] for d in self.digests if d.valid)],
                   default=0)
        expected = 1  # the seq after the last one seen, walking the seqs in order
        for seq in sorted(hashes):
            if seq > expected:
                self._gap(expected, seq - 1, self.where[seq])
            want = hashes.get(seq - 1) if seq > 1 else (genesis(stream) if stream else None)
            if want is not None and prevs[seq] != want:
                self._problem("inserted", self.where[seq], f"seq {seq} does not link to"
                              f" seq {seq - 1} (prev differs): inserted or rewritten", seq)
            expected = seq + 1
        if last >= expected:
            self._gap(expected, last, "end of input")

    def _gap(self, first: int, last: int, where: str) -> None:
        n = last - first + 1
        span = f"{first}" if n == 1 else f"{first}-{last}"
        self._problem("gap", where, f"missing events: seq {span} ({n} event(s))", first)

    def _check_digests(self) -> str | None:
        streams: collections.Counter[str] = collections.Counter()
        for d in self.digests:
            body = d.body
            bad = [k for k, t in _DIGEST_FIELDS.items()
                   if not isinstance(body, dict) or not isinstance(body.get(k), t)]
            if bad:
                self._problem("digest-chain", d.where, f"malformed digest (field {bad[0]})")
                continue
            key = self.keys.get(body["key_id"])
            if key is None:
                self._problem("unknown-key", d.where, f"digest of seq {body['first_seq']}-"
                              f"{body['last_seq']} signed with unknown key {body['key_id']}",
                              body["last_seq"])
                continue
            try:
                signature = base64.b64decode(body["signature"], validate=True)
            except (binascii.Error, ValueError):
                signature = b""
            if not key.verify(signature, signed_payload(body)):
                self._problem("bad-signature", d.where, f"digest of seq {body['first_seq']}-"
                              f"{body['last_seq']}: signature does not verify with key"
                              f" {body['key_id']}", body["last_seq"])
                continue
            d.valid = True
            streams[body["stream"]] += 1
        stream = self.stream
        if stream is None and 1 in self.prevs:  # the stream whose chain the events are on
            stream = next((s for s in streams if genesis(s) == self.prevs[1]), None)
        if stream is None and streams:
            stream = streams.most_common(1)[0][0]
        by_signature: dict[str, dict[str, Any]] = {}
        for d in self.digests:
            if not d.valid:
                continue
            body = d.body
            if body["stream"] != stream:
                self._problem("other-stream", d.where, f"digest of stream {body['stream']!r}"
                              f" in stream {stream!r}", body["last_seq"])
                d.valid = False
                continue
            if body["signature"] in by_signature:
                continue
            by_signature[body["signature"]] = body
        for d in self.digests:
            if not d.valid or by_signature.get(d.body["signature"]) is not d.body:
                continue
            body = d.body
            first, last = body["first_seq"], body["last_seq"]
            if body["prev_signature"] == "":
                if first != 1:
                    self._problem("digest-chain", d.where, f"digest of seq {first}-{last}"
                                  " claims to be the first but does not start at seq 1", first)
            else:
                prev = by_signature.get(body["prev_signature"])
                if prev is None:
                    self._problem("digest-chain", d.where, f"digest of seq {first}-{last}:"
                                  " its previous digest is missing", first)
                elif first != prev["last_seq"] + 1:
                    self._problem("digest-chain", d.where, f"digest of seq {first}-{last}"
                                  f" does not follow its previous digest (ending at seq"
                                  f" {prev['last_seq']})", first)
            if last >= 1 and last in self.hashes and self.hashes[last] != body["head"]:
                self._problem("modified", d.where, f"digest head does not match seq {last}:"
                              f" events up to seq {last} were changed", last)
            elif last == 0 and body["head"] != genesis(body["stream"]):
                self._problem("digest-chain", d.where, "digest of an empty stream with a"
                              " head that is not the stream's genesis", 0)
        return stream

    def _check_tail(self, valid: list[dict[str, Any]], report: Report) -> None:
        timed = [(t, d) for d in valid if (t := _parse_time(d["time"])) is not None]
        last_seq = report.last_seq
        if not timed:
            self._problem("tail", "end of input", f"no valid digest covers the stream"
                          f" (events up to seq {last_seq})", last_seq or None)
            return
        when, newest = max(timed, key=lambda item: item[0])
        report.newest_digest = f"{newest['time']} (seq {newest['last_seq']})"
        covered = max(d["last_seq"] for d in valid)
        limit = 2 * float(newest["interval"])
        if self.now - when > limit:
            uncovered = (f"events seq {covered + 1}-{last_seq} are not covered by any digest"
                         if last_seq > covered else "no events after it")
            self._problem("tail", "end of input", f"newest digest is from {newest['time']},"
                          f" older than 2 x digest_interval ({limit:g}s) at"
                          f" {rfc3339(self.now)}: the tail may have been cut ({uncovered})",
                          covered + 1)
