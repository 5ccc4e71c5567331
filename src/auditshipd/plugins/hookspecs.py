"""Every hook auditshipd offers to plugins, in one place.

The argument names are the public contract: arguments may be added in later versions,
never renamed or removed, and an implementation may accept any subset of them.
Hooks are called synchronously, on the daemon's event loop. Only ``startup`` and
``shutdown`` may return an awaitable, which the core awaits. The notifications
(``config_loaded``, ``batch_delivered``, ``batch_dead_lettered``, ``event_quarantined``)
must be quick and do their work before they return: an awaitable they return is never
awaited (a coroutine function as one of them never runs). One with async work to do
starts a task itself (``asyncio.get_running_loop().create_task(...)``, keeping a
reference to it). The core never calls a hook per event: sinks and redactors are called
directly on the hot path.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("auditshipd")
hookimpl = pluggy.HookimplMarker("auditshipd")


@hookspec
def register_sink_types() -> list[Any]:
    """Return a list of :class:`auditshipd.plugin.SinkType` this plugin provides.

    Example::

        @hookimpl
        def register_sink_types():
            return [SinkType("loki", LokiOptions, LokiSink, "Grafana Loki push API")]
    """


@hookspec
def startup(daemon: Any) -> Any:
    """Called once when the daemon has started its sinks, before it reads the journal
    (not again on a reload: a plugin first loaded by a reload gets no call).

    May return an awaitable, which the core awaits. Example::

        @hookimpl
        def startup(daemon):
            daemon.logger.info("my plugin is ready")
    """


@hookspec
def shutdown(daemon: Any) -> Any:
    """Called once when the daemon stops, after the sinks flushed. May return an awaitable,
    which the core awaits.

    Example::

        @hookimpl
        def shutdown(daemon):
            return my_client.aclose()
    """


@hookspec
def batch_delivered(sink_name: str, batch: Any) -> None:
    """Notification: ``batch`` (a :class:`auditshipd.delivery.batch.Batch`) was acknowledged by
    the sink ``sink_name``. Called once per batch, never per event; must be quick and
    synchronous (an awaitable returned is not awaited).

    Example::

        @hookimpl
        def batch_delivered(sink_name, batch):
            counters[sink_name] += len(batch)
    """


@hookspec
def batch_dead_lettered(sink_name: str, batch: Any, error: str) -> None:
    """Notification: ``batch`` went to the dead-letter file of ``sink_name`` with
    ``error`` (a message with secrets removed). Synchronous, as every notification.

    Example::

        @hookimpl
        def batch_dead_lettered(sink_name, batch, error):
            pager.warn(f"{len(batch)} audit events dead-lettered by {sink_name}")
    """


@hookspec
def event_quarantined(sink_name: str, segment: str, offset: int, reason: str) -> None:
    """Notification: the journal line at ``segment``:``offset`` could not be shipped to
    ``sink_name`` (malformed, over the size limit, lost a required field in redaction)
    and was written to the quarantine file with ``reason``. Synchronous, as every
    notification.

    Example::

        @hookimpl
        def event_quarantined(sink_name, segment, offset, reason):
            print(f"quarantined {segment}:{offset}: {reason}")
    """


@hookspec
def config_loaded(config: Any) -> None:
    """Notification: ``config`` (an :class:`auditshipd.config.Config`) was loaded and
    validated, at start-up or on a reload. Synchronous, as every notification. Example::

        @hookimpl
        def config_loaded(config):
            print([s.name for s in config.sinks])
    """
