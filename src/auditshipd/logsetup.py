"""Log output: JSON lines when stderr is not a TTY (journald, files), readable on a TTY."""

from __future__ import annotations

import datetime as _dt
import logging
import sys

import msgspec

__all__ = ["setup_logging"]

_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _encode(doc).decode()


def setup_logging(level: str = "info", json: bool | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json is None:
        json = not sys.stderr.isatty()
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
