"""The :class:`~auditshipd.plugin.SinkContext` a configured sink is built with, the same
for the daemon and for ``dlq replay``: a self-service stream's connections go through a
resolver that answers only with addresses its destination policy allows, whoever sends."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..netguard import GuardedResolver
from ..plugin import SinkContext

if TYPE_CHECKING:
    from ..config import Config, SinkConfig

__all__ = ["sink_context"]


def sink_context(config: Config, sc: SinkConfig, logger: logging.Logger) -> SinkContext:
    """The context of ``sc``, one of ``config``'s sinks or a self-service stream."""
    return SinkContext(
        name=sc.name, state_dir=config.state_dir, logger=logger,
        journal_path=config.journal.path, config=config, format=sc.format,
        resolver=GuardedResolver(sc.destinations) if sc.destinations is not None else None,
    )
