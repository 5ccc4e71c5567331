"""A running daemon's config file and stream files, watched: an edit asks for a reload.

The file watcher (inotify, or polling where it is unavailable) answers within a fraction
of a second; under it, a look every 2 s at the files' signature catches an edit made
before the watch was set up, or on a file system without change notifications.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = ["watch_config"]

log = logging.getLogger("auditshipd")

POLL_SECONDS = 2.0


async def _poll(daemon: Daemon) -> None:
    while True:
        await asyncio.sleep(POLL_SECONDS)
        if daemon._config_signature() != daemon._loaded_signature:
            daemon.reload_requested.set()


async def watch_config(daemon: Daemon) -> None:
    """Set ``daemon.reload_requested`` when its config file or a stream file changes."""
    from watchfiles import awatch

    daemon._background.append(asyncio.create_task(_poll(daemon), name="config-poll"))
    config = daemon.config
    cfg_path = Path(str(daemon.config_path)).resolve()
    dirs = {str(cfg_path.parent)}
    if config.streams_dir:
        dirs.add(str(Path(config.streams_dir).resolve()))

    def relevant(path: str) -> bool:
        p = Path(path)
        if p == cfg_path:
            return True
        streams = daemon.config.streams_dir
        return bool(streams) and p.parent == Path(streams).resolve() and p.suffix == ".toml"

    try:
        async for changes in awatch(*dirs, debounce=200, recursive=False,
                                    force_polling=config.journal.force_polling,
                                    poll_delay_ms=int(config.journal.poll_interval * 1000)):
            if any(relevant(path) for _change, path in changes):
                daemon.reload_requested.set()
    except Exception as exc:
        log.warning("config file watching unavailable (%s); reload with SIGHUP", exc)
