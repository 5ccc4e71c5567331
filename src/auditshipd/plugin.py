"""The public plugin API: the one import a sink plugin needs.

Everything a sink plugin needs is importable from here: :data:`hookimpl`, the
:class:`Sink` protocol, :class:`SinkType`, :class:`SinkOptions`, :class:`SinkContext`,
:class:`Batch`, the errors (:class:`RetryableError`, :class:`PermanentError`,
:class:`ConfigError`) and :func:`atomic_write`.

A sink only encodes and sends one batch, and says whether a failure is retryable by
raising :class:`RetryableError` or :class:`PermanentError`. Batching, retries, dead
letters, cursors and metrics belong to the core. A minimal sink::

    from auditshipd.plugin import SinkOptions, SinkType, hookimpl

    class Options(SinkOptions):
        path: str

    class MySink:
        def __init__(self, name, options, context):
            self.options = options
        async def start(self): ...
        async def send(self, batch): ...   # raise RetryableError / PermanentError
        async def close(self): ...

    @hookimpl
    def register_sink_types():
        return [SinkType("mine", Options, MySink, "Writes to my thing")]
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import msgspec

from .delivery.batch import Batch
from .durable import atomic_write
from .errors import ConfigError, PermanentError, RetryableError, SinkError
from .plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "Batch",
    "ConfigError",
    "EmptyOptions",
    "PermanentError",
    "RetryableError",
    "Sink",
    "SinkContext",
    "SinkError",
    "SinkOptions",
    "SinkType",
    "atomic_write",
    "hookimpl",
    "module_available",
]


class SinkOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of a sink type's options: each field is a key of its ``[[sinks]]`` table;
    unknown keys are errors and fields are keyword-only (both inherited)."""


class EmptyOptions(SinkOptions):
    """Options of a sink type that takes none."""


@dataclass(frozen=True)
class SinkContext:
    """What the core gives a sink besides its options."""

    name: str
    state_dir: Path
    logger: logging.Logger
    # The file the daemon's own audit events go to (journal.path), "" when none.
    journal_path: str = ""
    # The whole configuration the sink was loaded from (the portal sink reads [portal]).
    config: Config | None = None
    # What the batch's ``lines`` are: "native" (the redacted JSON) or a SIEM format
    # ("ocsf", "ecs", "cef": docs/formats.md); ``batch.events`` are the redacted events.
    format: str = "native"
    # The aiohttp resolver (``aiohttp.abc.AbstractResolver``) every connection of the
    # sink must use, or None (the system's). Self-service streams get one that refuses
    # loopback, private and metadata addresses (auditshipd.netguard).
    resolver: Any = None


@runtime_checkable
class Sink(Protocol):
    """One configured destination. Created by ``SinkType.factory(name, options, context)``."""

    async def start(self) -> None:
        """Open connections / files. Raising RetryableError here is retried by the core."""

    async def send(self, batch: Batch) -> None:
        """Deliver the whole batch, or raise RetryableError / PermanentError."""

    async def close(self) -> None:
        """Release resources. Called once, even if ``start`` failed."""


@dataclass(frozen=True)
class SinkType:
    """A kind of sink that a plugin contributes through ``register_sink_types``.

    ``options``: a ``msgspec.Struct`` class (``forbid_unknown_fields=True``) that
    describes the type-specific keys of a ``[[sinks]]`` table; the core converts and
    type-checks the table with it, so unknown keys and wrong types are reported with
    the key name. Unknown keys are rejected even where a Struct (or a nested one)
    lacks ``forbid_unknown_fields``: a misspelled key never passes silently. ``validate``: optional ``(options) -> None`` raising
    ``ConfigError(msg, key=...)`` for checks a type cannot express (bad URL, missing
    token). ``secrets``: option names whose values must never be logged.
    """

    name: str
    options: type[msgspec.Struct]
    factory: Callable[[str, Any, SinkContext], Sink]
    description: str = ""
    validate: Callable[[Any], None] | None = None
    secrets: tuple[str, ...] = ()
    plugin: str = ""
    # Optional ``async (options) -> str`` for ``check-config --check-connections``: reach
    # the endpoint without sending events; return what was checked, raise on failure.
    # Without it, the core connects to the options' ``url`` (TCP, and TLS for https://,
    # mqtts://, tls://, honouring ``tls_verify`` and ``ca_file``).
    check_connection: Callable[[Any], Awaitable[str]] | None = None
    # Defaults of the ``batch`` table for this type (``{"max_events": 5000}``) where the
    # sink's table leaves a key out: a store that commits per batch wants larger ones.
    batch_defaults: Mapping[str, Any] | None = None
    # Default ``concurrency`` (batches in flight) where the sink's table leaves it out.
    concurrency: int | None = None

    def build(self, name: str, options: Any, context: SinkContext) -> Sink:
        return self.factory(name, options, context)


def module_available(module: str) -> bool:
    """Whether ``module`` (an optional extra's library) can be imported, without importing it."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False

