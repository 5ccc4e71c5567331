"""Signed digests: a record, delivered in the stream like an event, that covers the
sequence range since the previous digest and is chained to it by signature.

```
{"id": "auditshipd-digest-<stream>-<last_seq>-<unix ms>", "action": "auditshipd.digest",
 "occurred_at": TIME, "digest": {"version": 1, "stream": NAME, "first_seq": F,
 "last_seq": L, "head": HASH OF EVENT L, "prev_signature": SIG OF THE PREVIOUS DIGEST,
 "time": TIME, "interval": SECONDS, "key_id": KEY ID, "signature": BASE64}}
```

The signature is Ed25519 over the canonical form of ``digest`` without ``signature``. An
interval without events still gets a digest (``first_seq = last_seq + 1``, the same
head): a stream whose newest digest is older than two intervals has lost its tail.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import msgspec

from ..timestamps import epoch_rfc3339
from .canonical import canonical
from .chain import ChainState
from .keys import SigningKey

__all__ = ["DIGEST_ACTION", "DigestPolicy", "digest_object_key", "make_digest", "signed_payload"]

DIGEST_ACTION = "auditshipd.digest"
_encode = msgspec.json.Encoder().encode


def rfc3339(ts: float) -> str:
    return epoch_rfc3339(ts, digits=6)


def signed_payload(digest: dict[str, Any]) -> bytes:
    """The bytes a digest's signature covers."""
    return canonical({k: v for k, v in digest.items() if k != "signature"})


class DigestPolicy:
    """When a stream is due for a digest: ``interval`` seconds after the last one, or
    once ``events`` events are not covered yet (0: no count limit)."""

    __slots__ = ("interval", "events")

    def __init__(self, interval: float = 300.0, events: int = 0):
        self.interval = interval
        self.events = events

    def due(self, state: ChainState, now: float) -> bool:
        if state.digest_time == 0.0:  # never digested: start the clock, no digest yet
            state.digest_time = now
            return False
        if self.events and state.seq - state.digest_seq >= self.events:
            return True
        return now - state.digest_time >= self.interval

    def next_due(self, state: ChainState) -> float:
        """Unix time at which the interval runs out."""
        return (state.digest_time or time.time()) + self.interval


def make_digest(state: ChainState, key: SigningKey, interval: float,
                now: float | None = None) -> bytes:
    """The encoded digest record covering ``state.digest_seq + 1 .. state.seq``; the
    state moves on to it."""
    now = time.time() if now is None else now
    when = rfc3339(now)
    digest: dict[str, Any] = {
        "version": 1,
        "stream": state.stream,
        "first_seq": state.digest_seq + 1,
        "last_seq": state.seq,
        "head": state.head,
        "prev_signature": state.digest_signature,
        "time": when,
        # An integer when it is one: other languages write 300.0 as "300".
        "interval": int(interval) if float(interval).is_integer() else interval,
        "key_id": key.key_id,
    }
    digest["signature"] = key.sign(signed_payload(digest))
    state.digest_seq = state.seq
    state.digest_signature = digest["signature"]
    state.digest_time = now
    record = {
        "id": f"auditshipd-digest-{state.stream}-{state.seq}-{int(now * 1000)}",
        "action": DIGEST_ACTION,
        "occurred_at": when,
        "digest": digest,
    }
    return _encode(record)


def digest_object_key(batch: Any, *, gzip: bool = True) -> str | None:
    """The object key of a batch that is one digest record (the object-store sinks, s3,
    gcs and azure_blob, keep digests as their own objects under ``digests/``), else
    None. ``gzip``: whether the object's body is gzipped (``.jsonl.gz``, else
    ``.jsonl``)."""
    if len(batch) != 1 or b'"auditshipd.digest"' not in batch.lines[0]:
        return None
    record = batch.events[0]
    if record.get("action") != DIGEST_ACTION or "integrity" in record:
        return None
    name = f"digests/{quote(str(record.get('id', '')), safe='-_.~')}.jsonl"
    return name + ".gz" if gzip else name
