"""Config tables of the sinks the daemon tests use: an http sink with quick retries and
short batch timeouts, a file sink."""

from __future__ import annotations

from pathlib import Path


def http_sink(url: str, name: str = "web", batch: int = 100, concurrency: int = 1,
              extra: str = "") -> str:
    return f"""
[[sinks]]
name = "{name}"
type = "http"
url = "{url}"
concurrency = {concurrency}
{extra}
[sinks.batch]
max_events = {batch}
timeout = 0.05
[sinks.retry]
initial_backoff = 0.05
max_backoff = 0.5
attempt_timeout = 2.0
"""


def file_sink(path: Path, name: str = "local-file", extra: str = "", batch: str = "") -> str:
    """A ``file`` sink table; ``extra`` lines in it, ``batch`` lines in its [sinks.batch]."""
    table = f"""
[[sinks]]
name = "{name}"
type = "file"
path = "{path}"
{extra}
"""
    return table + (f"[sinks.batch]\n{batch}\n" if batch else "")
