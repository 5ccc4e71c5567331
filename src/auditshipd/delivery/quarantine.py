"""Quarantine: journal lines that cannot be shipped, kept with where and why.

One JSONL file per sink under ``state_dir/quarantine/``. Each record names the segment
path and identity, the byte offset, the reason and the line itself (text, or base64
when it is not UTF-8; a preview for lines over the size limit, which stay in the
journal at that offset). Nothing is lost: the consumer moves on, the line is here.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import msgspec

from ..durable import append_durably
from ..timestamps import now_rfc3339

__all__ = ["QuarantineFile", "QuarantineRecord"]


class QuarantineRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    quarantined_at: str
    sink: str
    segment: str
    path: str
    offset: int
    reason: str
    length: int
    line: str | None = None
    line_b64: str | None = None
    truncated: bool = False


_encode = msgspec.json.Encoder().encode
_PREVIEW = 4096


class QuarantineFile:
    def __init__(self, state_dir: str | os.PathLike[str], sink: str):
        self.path = Path(state_dir) / "quarantine" / f"{sink}.jsonl"
        self.sink = sink

    def write(self, records: list[QuarantineRecord]) -> None:
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # all or nothing, even on a full disk: the cursor moves past these lines only once
        # their records are whole
        append_durably(self.path, b"".join(_encode(r) + b"\n" for r in records))

    def record(self, segment: str, path: str, offset: int, reason: str, line: bytes,
               length: int | None = None) -> QuarantineRecord:
        length = len(line) if length is None else length
        truncated = len(line) > _PREVIEW or length > len(line)
        body = line[:_PREVIEW]
        rec = QuarantineRecord(
            quarantined_at=now_rfc3339(),
            sink=self.sink, segment=segment, path=path, offset=offset, reason=reason,
            length=length, truncated=truncated,
        )
        try:
            rec.line = body.decode("utf-8")
        except UnicodeDecodeError:
            rec.line_b64 = base64.b64encode(body).decode("ascii")
        return rec

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def read(self) -> list[QuarantineRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        dec = msgspec.json.Decoder(QuarantineRecord)
        return [dec.decode(line) for line in data.splitlines() if line.strip()]
