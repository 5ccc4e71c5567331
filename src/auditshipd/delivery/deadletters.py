"""Dead-letter files: batches a sink could not deliver, kept for ``dlq replay``
(:mod:`.replay`); and ``auditshipd dlq list`` (:func:`dlq_summary`).

One JSONL file per sink (``state_dir/deadletter/SINK.jsonl``); each record holds the
error (secrets removed), whether it was retryable, the attempt count, the first and
last attempt times and the (redacted) events. Appends are fsynced before the sink's
cursor moves past the events. A lock file serialises the daemon's appends with
``dlq replay``'s rewrite. Storage is bounded: past ``max_bytes`` a write raises
:class:`DeadLetterFull` and the sink stops advancing instead of discarding anything.

A sink with a ``format`` was handed the lines in that format (sealed, with
``integrity = true``): its letters keep those exact lines too (``lines``), and ``dlq
replay`` sends them as they are, so a replayed event carries the ``seq`` and hash it was
sealed with and the stream still verifies. Letters of a native sink hold the events as
delivered (a sealed line decodes to its event, ``integrity`` member first, and encodes
back to the same bytes).

A line that cannot be decoded (the torn end of an append cut by a crash or a full
disk) is reported by :meth:`DeadLetterFile.scan` and kept where it is, byte for byte:
it may be the only copy of events, so only a person decides what to do with it. The
next append starts on a new line, so the torn line never swallows a good record.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgspec

from ..config import Config
from ..durable import append_durably, atomic_write, file_lock
from ..formats.registry import reformat
from .batch import Batch

__all__ = [
    "DeadLetter",
    "DeadLetterFile",
    "DeadLetterFull",
    "DeadLetterScan",
    "ReplayRunning",
    "dlq_summary",
    "letter_batch",
    "letter_for",
]


class DeadLetterFull(Exception):
    """The sink's dead-letter storage reached ``dead_letter.max_bytes``."""


class DeadLetter(msgspec.Struct, kw_only=True):
    sink: str
    error: str
    retryable: bool
    attempts: int
    first_attempt_at: str
    last_attempt_at: str
    dead_lettered_at: str
    events: list[dict[str, Any]]
    # A sink with a format: the lines it was handed (encoded, sealed with integrity on),
    # one per event; None for a native sink (``events`` are what it was handed).
    lines: list[str] | None = None


def letter_for(batch: Batch, *, sink: str, error: str, retryable: bool, attempts: int,
               first_attempt_at: str, last_attempt_at: str, dead_lettered_at: str
               ) -> DeadLetter:
    """The dead letter of ``batch``: its redacted events, and for a batch in a sink's
    format the exact lines the sink was handed."""
    lines = [x.decode() for x in batch.lines] if batch.formatted else None
    return DeadLetter(sink=sink, error=error, retryable=retryable, attempts=attempts,
                      first_attempt_at=first_attempt_at, last_attempt_at=last_attempt_at,
                      dead_lettered_at=dead_lettered_at, events=batch.events, lines=lines)


def letter_batch(encoder: Any, letter: DeadLetter) -> Batch:
    """What ``dlq replay`` hands the sink: the lines the letter kept, else its events in
    the sink's format (letters written before lines were kept)."""
    if letter.lines is not None and len(letter.lines) == len(letter.events):
        return Batch(lines=[x.encode() for x in letter.lines],
                     source=[_encode(e) for e in letter.events])
    return reformat(encoder, Batch(letter.events))


class DeadLetterScan(msgspec.Struct, kw_only=True):
    """The readable records of a dead-letter file and the lines that are not."""

    letters: list[DeadLetter]
    unreadable: list[int]  # 1-based line numbers


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(DeadLetter).decode


def _parse(line: bytes) -> DeadLetter | None:
    try:
        return _decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None



class ReplayRunning(RuntimeError):
    """Another replay of the same sink's dead letters is running."""


class DeadLetterFile:
    def __init__(self, state_dir: str | os.PathLike[str], sink: str,
                 max_bytes: int = 1 << 30):
        self.dir = Path(state_dir) / "deadletter"
        self.path = self.dir / f"{sink}.jsonl"
        self.lock_path = self.dir / f".{sink}.lock"
        self.sink = sink
        self.max_bytes = max_bytes

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.lock_path):
            yield

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Held for a whole replay: a second replay of the same sink meanwhile would
        remove, by count, letters the first one already removed, then the daemon's newer
        ones it never sent. :class:`ReplayRunning` when another replay holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with ExitStack() as held:
            try:
                held.enter_context(file_lock(self.dir / f".{self.sink}.replay.lock", wait=False))
            except BlockingIOError:
                raise ReplayRunning(f"another `dlq replay` of {self.sink} is running") from None
            yield

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, letter: DeadLetter) -> None:
        data = _encode(letter) + b"\n"
        with self.locked():
            append_durably(self.path, data, check=self._room_for)

    def _room_for(self, size: int) -> None:
        """Refuse an append that would take the file to ``size`` bytes, over its limit."""
        if size > self.max_bytes:
            raise DeadLetterFull(
                f"dead-letter file {self.path} would exceed dead_letter.max_bytes"
                f" ({self.max_bytes} bytes); replay or move it to let the sink advance"
            )

    def _lines(self) -> list[bytes]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return data.splitlines()

    def scan(self) -> DeadLetterScan:
        """Every readable record, in order, and the line numbers of the unreadable ones."""
        letters: list[DeadLetter] = []
        unreadable: list[int] = []
        for number, line in enumerate(self._lines(), 1):
            if not line.strip():
                continue
            letter = _parse(line)
            if letter is None:
                unreadable.append(number)
            else:
                letters.append(letter)
        return DeadLetterScan(letters=letters, unreadable=unreadable)

    def read(self) -> list[DeadLetter]:
        """The readable records (see :meth:`scan` for the unreadable lines)."""
        return self.scan().letters

    def count(self) -> tuple[int, int]:
        """(records, events)."""
        letters = self.read()
        return len(letters), sum(len(x.events) for x in letters)

    def remove_first(self, n: int, keep: list[DeadLetter]) -> None:
        """Replace the first ``n`` readable records by ``keep`` (replay's result).
        Records the daemon appended meanwhile and unreadable lines stay as they are."""
        with self.locked():
            out: list[bytes] = []
            removed = 0
            for line in self._lines():
                if not line.strip():
                    continue
                if removed < n and _parse(line) is not None:
                    if removed == 0:
                        out.extend(_encode(x) for x in keep)
                    removed += 1
                    continue
                out.append(line)
            if removed == 0:
                out[:0] = [_encode(x) for x in keep]
            atomic_write(self.path, b"".join(line + b"\n" for line in out))



def dlq_summary(config: Config) -> list[dict[str, Any]]:
    """A row per configured sink, then per other dead-letter file in the state dir (a
    self-service stream's, a sink since removed from the config): records, events,
    bytes, the oldest letter's time, the last error, the unreadable lines."""
    files = [DeadLetterFile(config.state_dir, sc.name, sc.dead_letter.max_bytes)
             for sc in config.sinks]
    named = {f.sink for f in files}
    for path in sorted((Path(config.state_dir) / "deadletter").glob("*.jsonl")):
        sink = path.name[: -len(".jsonl")]
        if sink not in named:
            files.append(DeadLetterFile(config.state_dir, sink))
    rows = []
    for f in files:
        scan = f.scan()
        letters = scan.letters
        rows.append({
            "sink": f.sink, "records": len(letters),
            "events": sum(len(x.events) for x in letters), "bytes": f.size(),
            "oldest": letters[0].dead_lettered_at if letters else None,
            "last_error": letters[-1].error if letters else None,
            "path": str(f.path), "unreadable_lines": scan.unreadable,
        })
    return rows
