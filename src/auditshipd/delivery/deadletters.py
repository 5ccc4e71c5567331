"""Dead-letter files: batches a sink could not deliver, kept for ``dlq replay``; and
``auditshipd dlq list`` / ``dlq replay`` themselves (:func:`dlq_summary`, :func:`replay`).

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

``dlq replay`` sends a sink only the events of its current ``organizations`` (the core's
rule, :class:`~.scope.SinkScope`): letters written while the sink had a wider scope keep
the events it no longer covers, in the file, neither sent nor lost (:class:`_LetterScope`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..config import Config
from ..durable import append_durably, atomic_write
from ..formats.registry import encoder_for_sink, reformat
from ..integrity.canonical import RESERVED_KEY
from ..integrity.digest import DIGEST_ACTION
from ..scrub import scrub_secrets, sink_secrets
from .batch import Batch
from .contexts import sink_context
from .retry import Backoff, DeliveryFailure, bad_count_reporter, deliver
from .scope import SinkScope, line_scope

__all__ = [
    "DeadLetter",
    "DeadLetterFile",
    "DeadLetterFull",
    "DeadLetterScan",
    "ReplayResult",
    "ReplayRunning",
    "dlq_summary",
    "letter_batch",
    "letter_for",
    "replay",
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
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Held for a whole replay: a second replay of the same sink meanwhile would
        remove, by count, letters the first one already removed, then the daemon's newer
        ones it never sent. :class:`ReplayRunning` when another replay holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / f".{self.sink}.replay.lock",
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReplayRunning(f"another `dlq replay` of {self.sink} is running") from None
            yield
        finally:
            os.close(fd)

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


log = logging.getLogger("auditshipd.dlq")

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

@dataclass
class ReplayResult:
    """What a replay did: events delivered, events (and letters) still dead-lettered,
    unreadable lines left in the file, and the error that stopped it, if any."""

    sink: str
    path: str
    replayed: int = 0
    records_replayed: int = 0  # letters delivered whole
    still_dead_lettered: int = 0
    letters_kept: int = 0
    last_error: str | None = None  # of the last letter that stays (scrubbed)
    out_of_scope: int = 0  # events kept: not of the sink's current organizations
    unreadable_lines: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.letters_kept and not self.unreadable_lines and self.error is None

class _LetterScope:
    """Which events of a letter the sink may be sent again: those of its current
    ``organizations`` (all of them for an unscoped sink). ``start_at`` plays no part: it
    says where a new sink starts reading the journal, and these events were read.

    A letter holds events as the sink's redaction wrote them, so the slugs are compared as
    that policy writes them (verbatim, or hashed). Where the policy writes every slug alike
    (``organization.slug`` dropped or masked), a letter cannot show an event's
    organization: such events stay, as an event without an organization does."""

    def __init__(self, sc: Any, redactor: Any):
        self.scope: SinkScope | None = None
        self.none = False  # scoped, but no event can be shown to be in scope
        if not sc.organizations:
            return
        outsider = _written_slug(redactor, "-")  # no organization's slug
        written = {_written_slug(redactor, org) for org in sc.organizations} - {None, outsider}
        if written:
            self.scope = SinkScope(written)  # never empty: an empty scope means all
        else:
            self.none = True

    def split(self, letter: DeadLetter) -> tuple[DeadLetter | None, DeadLetter | None]:
        """(the letter's events to send, those that stay), each a letter or None."""
        scope = self.scope
        if scope is None and not self.none:
            return letter, None
        inside = [scope is not None and scope.admits(*line_scope(_encode(e)))
                  for e in letter.events]
        if all(inside):
            return letter, None
        if not any(inside):
            return None, letter
        lines = letter.lines if letter.lines is not None and len(letter.lines) == len(
            letter.events) else None

        def part(want: bool) -> DeadLetter:
            pick = [i for i, x in enumerate(inside) if x is want]
            return msgspec.structs.replace(
                letter, events=[letter.events[i] for i in pick],
                lines=None if lines is None else [lines[i] for i in pick])

        return part(True), part(False)


def _sink_redactor(config: Config, sc: Any) -> Any:
    """The redactor the daemon runs for ``sc``: the root policy or the sink's override."""
    from ..redaction.redactor import compile_policy

    redactor = compile_policy(config.redaction, source=config.source)
    if sc.redaction is not None:
        redactor = compile_policy(sc.redaction, source=config.source, base=redactor)
    return redactor


def _redacted_again(redactor: Any, letter: DeadLetter) -> DeadLetter:
    """``letter`` as the sink's current policy lets it out. Unchanged when the policy
    leaves its events as they are (they were written by it; a seal, the ``integrity``
    member, and digest records are the daemon's own); else, written under a looser
    policy, its events redacted again and its lines left out (encoded again, unsealed)."""
    events, changed = [], False
    for event in letter.events:
        if event.get("action") != DIGEST_ACTION:
            plain = {k: v for k, v in event.items() if k != RESERVED_KEY}
            again = redactor(plain)
            if again != plain:
                event, changed = again, True
        events.append(event)
    return msgspec.structs.replace(letter, events=events, lines=None) if changed else letter


def _written_slug(redactor: Any, org: str) -> Any:
    """``organization.slug`` as ``redactor`` writes it for ``org`` (None: not written)."""
    out = redactor({"id": "scope", "action": "scope", "occurred_at": "2000-01-01T00:00:00Z",
                    "organization": {"slug": org}})
    slug = line_scope(_encode(out))[0]
    return slug if isinstance(slug, str) else None


def _kept(letter: DeadLetter, failure: DeliveryFailure, secrets: Sequence[str]) -> DeadLetter:
    return letter_for(
        failure.batch, sink=letter.sink, error=scrub_secrets(str(failure.error), secrets) or "",
        retryable=failure.error.retryable, attempts=letter.attempts + failure.attempts,
        first_attempt_at=letter.first_attempt_at, last_attempt_at=failure.last_attempt_at,
        dead_lettered_at=letter.dead_lettered_at)

async def replay(config: Config, sink_name: str, *, attempts: int = 3,
                 progress: Any = None) -> ReplayResult:
    """Send every dead letter of ``sink_name`` through that sink again.

    Delivered events leave the file; failed ones stay (with the new error and attempt
    count), as do letters never tried because an exception stopped the replay.
    """
    sc = config.sink(sink_name)
    assert sc.sink_type is not None
    dlf = DeadLetterFile(config.state_dir, sc.name, sc.dead_letter.max_bytes)
    try:
        with dlf.replaying():
            return await _replay(config, sc, dlf, attempts, progress)
    except ReplayRunning as exc:
        return ReplayResult(sink=sc.name, path=str(dlf.path), error=str(exc))


async def _replay(config: Config, sc: Any, dlf: DeadLetterFile, attempts: int,
                  progress: Any) -> ReplayResult:
    secrets = sink_secrets(sc)  # masked in every letter and message, as the daemon does
    scan = await asyncio.to_thread(dlf.scan)
    letters = scan.letters
    result = ReplayResult(sink=sc.name, path=str(dlf.path), unreadable_lines=scan.unreadable)
    if not letters:
        return result
    # The sink's own retry settings, but a bounded number of attempts: with
    # max_attempts = 0 (retry forever) a replay against a dead receiver would never end.
    backoff = Backoff(msgspec.structs.replace(sc.retry, max_attempts=attempts))
    bad_count = bad_count_reporter(log, sc.name, secrets)
    keep: list[DeadLetter] = []
    finished = 0  # letters fully handled (delivered, or their failures in ``keep``)
    try:
        redactor = _sink_redactor(config, sc)
        in_scope = _LetterScope(sc, redactor)
        context = sink_context(config, sc, log)
        sink = sc.sink_type.build(sc.name, sc.options, context)
        # A letter of a sink with a format kept the lines it was handed (sealed with
        # integrity on): they go out as they are; older letters are encoded again.
        encoder = encoder_for_sink(config, sc)
        try:
            await sink.start()
            for whole in letters:
                letter, held = in_scope.split(whole)
                if letter is not None:
                    letter = _redacted_again(redactor, letter)
                    failures: list[DeliveryFailure] = []

                    async def failed(f: DeliveryFailure,
                                     into: list[DeliveryFailure] = failures) -> None:
                        into.append(f)

                    batch = letter_batch(encoder, letter)
                    sent = await deliver(sink.send, batch, backoff, on_failed=failed,
                                         on_bad_count=bad_count)
                    keep.extend(_kept(letter, f, secrets) for f in failures)
                    result.replayed += sent
                    result.records_replayed += not failures and held is None
                if held is not None:  # not of the sink's organizations: stays as it is
                    keep.append(held)
                    result.out_of_scope += len(held.events)
                finished += 1
                if progress is not None:
                    progress(len(whole.events))
        finally:
            try:
                await sink.close()
            except Exception as exc:
                log.warning("closing sink %s failed: %s", sc.name,
                            scrub_secrets(str(exc), secrets))
    except Exception as exc:
        log.error("replay of %s stopped: %s: %s", sc.name, type(exc).__name__,
                  scrub_secrets(str(exc), secrets))
        result.error = scrub_secrets(f"{type(exc).__name__}: {exc}", secrets)
    finally:
        # Letters not finished stay whole, in order, after what failed before them.
        kept = keep + letters[finished:]
        try:
            await asyncio.to_thread(dlf.remove_first, len(letters), kept)
        except OSError as exc:  # a full disk: the file stays as it was, every letter in it
            kept = letters
            why = (f"the dead-letter file could not be rewritten ({exc.strerror or exc}):"
                   " every letter stays, the delivered ones are sent again next time")
            result.error = f"{result.error}; {why}" if result.error else why
        result.letters_kept = len(kept)
        result.still_dead_lettered = sum(len(x.events) for x in kept)
        if kept:
            result.last_error = result.error or kept[-1].error
    return result
