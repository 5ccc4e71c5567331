"""Build signed streams for the integrity tests, as a sink with integrity on would."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from auditshipd.integrity.digest import DigestPolicy
from auditshipd.integrity.keys import SigningKey
from auditshipd.integrity.sealer import StreamSealer

T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z


@dataclass
class BuiltStream:
    lines: list[bytes]
    end: float  # time of the final digest
    interval: float

    @property
    def verify_at(self) -> float:
        """A moment at which the intact stream's tail is still covered."""
        return self.end + 1.5 * self.interval

    def is_digest(self, i: int) -> bool:
        return b'"action":"auditshipd.digest"' in self.lines[i] and not self.lines[i].startswith(
            b'{"integrity"')

    def event_indexes(self) -> list[int]:
        return [i for i in range(len(self.lines)) if not self.is_digest(i)]

    def jsonl(self) -> bytes:
        return b"".join(line + b"\n" for line in self.lines)


def event(i: int, stream: str = "siem") -> dict:
    return {"id": f"{stream}-ev-{i:05d}", "action": "user.login",
            "occurred_at": "2024-05-01T12:00:00Z",
            "actor": {"type": "user", "email": f"user{i}@example.com", "name": "Zoë"},
            "organization": {"slug": "acme"}, "metadata": {"n": i, "ok": True}}


def build_stream(key: SigningKey, n_events: int, *, stream: str = "siem",
                 digest_events: int = 5, interval: float = 60.0, step: float = 10.0
                 ) -> BuiltStream:
    """``n_events`` events ``step`` seconds apart with digests by count and by time; after
    the last event the stream idles one interval, then its final digest."""
    sealer = StreamSealer(stream, key, DigestPolicy(interval, digest_events))
    now = T0
    sealer.digest_due(now)  # starts the digest clock
    lines: list[bytes] = []
    for i in range(n_events):
        now += step
        lines.append(sealer.seal(msgspec.json.encode(event(i, stream))))
        if sealer.digest_due(now):
            lines.append(sealer.digest(now))
    now += interval
    lines.append(sealer.digest(now))
    return BuiltStream(lines, now, interval)


def object_batches(stream: BuiltStream, size: int = 7) -> list[Any]:
    """The stream as an object-store sink gets it from the daemon: runs of at most
    ``size`` sealed events, and each digest as a batch of its own."""
    from auditshipd.delivery.batch import Batch

    out, run = [], []
    for i, line in enumerate(stream.lines):
        if stream.is_digest(i) or len(run) == size:
            if run:
                out.append(Batch(lines=run))
            run = []
        if stream.is_digest(i):
            out.append(Batch(lines=[line]))
        else:
            run.append(line)
    if run:
        out.append(Batch(lines=run))
    return out


def verify_download(objects: dict[str, bytes], target: Path, public_key: str, at: float
                    ) -> subprocess.CompletedProcess[str]:
    """Write downloaded ``objects`` (name -> stored bytes) under ``target`` and run
    ``auditshipd verify`` on the directory as of ``at``."""
    from auditshipd.integrity.digest import rfc3339

    for name, body in objects.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return subprocess.run([sys.executable, "-m", "auditshipd.cli", "verify", "--public-key",
                           public_key, "--now", rfc3339(at), str(target)],
                          capture_output=True, text=True, timeout=120)
