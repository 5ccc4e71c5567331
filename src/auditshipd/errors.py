"""Exceptions shared by the core and by plugins.

A sink signals the outcome of one delivery attempt by returning normally (the whole
batch was accepted) or by raising one of the :class:`SinkError` subclasses below. The
retry decision is a value carried by the exception, never guessed by the core.
"""

from __future__ import annotations

__all__ = [
    "AuditshipdError",
    "ConfigError",
    "ConfigErrors",
    "DropEvent",
    "PermanentError",
    "RetryableError",
    "SinkError",
]


class AuditshipdError(Exception):
    """Base class of every error auditshipd raises on purpose."""


class ConfigError(AuditshipdError):
    """A configuration problem, with the file and the key it concerns.

    ``str(err)`` reads ``FILE: KEY: what is wrong``. The message never contains a
    secret value: only key names and the kind of problem.
    """

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 line: int | None = None):
        self.file = file
        self.key = key
        self.reason = message
        self.line = line
        where = f"{file}:{line}" if file and line else file
        parts = [p for p in (where, key) if p]
        super().__init__(": ".join([*parts, message]))


class ConfigErrors(ConfigError):
    """Every problem found in one configuration, in file order of checking.

    Behaves as the first error (``file``, ``key``, ``reason``) for code that expects
    one; ``errors`` holds them all and ``str()`` lists them one per line.
    """

    def __init__(self, errors: list[ConfigError]):
        first = errors[0]
        super().__init__(first.reason, file=first.file, key=first.key, line=first.line)
        self.errors = list(errors)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return str(self.args[0])


class DropEvent(AuditshipdError):  # structlog's name, on purpose
    """Raised by a processor (redactor, filter) to say: this event must not be shipped.

    The core quarantines the event with ``reason``; it is never silently dropped.
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class SinkError(AuditshipdError):
    """A failed delivery attempt.

    ``accepted``: how many events at the *start* of the batch the receiver did accept
    before failing (Splunk's ``invalid-event-number``, for instance). The core never
    sends those again.
    """

    retryable: bool = False

    def __init__(self, message: str, *, accepted: int = 0):
        super().__init__(message)
        self.accepted = accepted


class RetryableError(SinkError):
    """Transient failure: timeouts, refused connections, 429, 5xx, broker down.

    ``retry_after`` (seconds) is the receiver's hint (``Retry-After``, rate-limit
    headers); the core waits at least that long before the next attempt.
    """

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, accepted: int = 0):
        super().__init__(message, accepted=accepted)
        self.retry_after = retry_after


class PermanentError(SinkError):
    """Failure that retrying cannot fix: 400/401/403, encoding errors, missing bucket.

    ``rejected``: how many events after the ``accepted`` prefix are bad. ``None``
    means "all the rest": they all go to the dead-letter file. With a number, the core
    dead-letters only those and sends the events after them again.
    """

    retryable = False

    def __init__(self, message: str, *, accepted: int = 0, rejected: int | None = None):
        super().__init__(message, accepted=accepted)
        self.rejected = rejected
