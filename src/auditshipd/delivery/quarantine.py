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
from typing import NamedTuple

import msgspec

from ..durable import append_durably
from ..timestamps import now_rfc3339

__all__ = ["QuarantineFile", "QuarantineRecord", "QuarantineScan", "quarantine_files"]


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


class QuarantineScan(NamedTuple):
    records: list[QuarantineRecord]
    unreadable: list[int]  # 1-based line numbers


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(QuarantineRecord).decode
_PREVIEW = 4096


def quarantine_files(state_dir: str | os.PathLike[str]) -> list[QuarantineFile]:
    """The quarantine file of every sink that has one in ``state_dir``, by sink name:
    configured sinks, self-service streams and sinks since removed from the config."""
    found = sorted(Path(state_dir, "quarantine").glob("*.jsonl"))
    return [QuarantineFile(state_dir, p.name[: -len(".jsonl")]) for p in found]


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
        """The readable records (a record a crash cut short is not one, see :meth:`scan`)."""
        return len(self.scan().records)

    def scan(self) -> QuarantineScan:
        """Every readable record, in order, and the line numbers of the unreadable ones
        (a record a crash cut short; the next append starts on a line of its own)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return QuarantineScan([], [])
        records: list[QuarantineRecord] = []
        unreadable: list[int] = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(_decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError):
                unreadable.append(number)
        return QuarantineScan(records, unreadable)

    def read(self) -> list[QuarantineRecord]:
        """The readable records (see :meth:`scan` for the unreadable lines)."""
        return self.scan().records
