"""``auditshipd dlq replay``: a sink's dead letters sent through it again.

Delivered events leave the file; failed ones stay with the new error and attempt count.
A replay sends a sink only the events of its current ``organizations`` (the core's rule,
:class:`~.scope.SinkScope`): letters written while the sink had a wider scope keep the
events it no longer covers, in the file, neither sent nor lost (:class:`_LetterScope`).
Letters are sent as the sink's current redaction lets them out (:func:`_redacted_again`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..config import Config
from ..formats.registry import encoder_for_sink
from ..integrity.canonical import RESERVED_KEY
from ..integrity.digest import DIGEST_ACTION
from ..scrub import scrub_secrets, sink_secrets
from .contexts import sink_context
from .deadletters import DeadLetter, DeadLetterFile, ReplayRunning, letter_batch, letter_for
from .retry import Backoff, DeliveryFailure, bad_count_reporter, deliver
from .scope import SinkScope, line_scope

__all__ = ["ReplayResult", "replay"]

log = logging.getLogger("auditshipd.dlq")
_encode = msgspec.json.Encoder().encode


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
