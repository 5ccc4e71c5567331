"""Unit tests of the gcs sink: options and error classification."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from auditshipd.errors import ConfigError, PermanentError, RetryableError
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.sinks.gcs import GcsOptions, classify_gcs_error, validate_options


def config_error(**options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        validate_options(GcsOptions(**{"bucket": "audit", **options}))
    return err.value


def test_valid_options_pass(tmp_path: Path) -> None:
    """Typical option sets validate."""
    key = tmp_path / "sa.json"
    key.write_text("{}")
    validate_options(GcsOptions(bucket="audit"))
    validate_options(GcsOptions(bucket="audit", credentials_file=str(key), gzip=False,
                                key_template="{sink}/{yyyy}/{first_id}-{last_id}.jsonl",
                                endpoint_url="http://127.0.0.1:9023"))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"bucket": ""}, "bucket"),
        ({"bucket": "audit/logs"}, "bucket"),
        ({"key_template": "audit/{yyyy}.jsonl"}, "key_template"),
        ({"key_template": "{first_id}-{last_id}-{nope}"}, "key_template"),
        ({"endpoint_url": "ftp://x"}, "endpoint_url"),
        ({"credentials_file": "/nonexistent/sa.json"}, "credentials_file"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_invalid_options_name_their_key(options: dict[str, Any], key: str) -> None:
    """Each mistake is reported with the key to fix."""
    assert config_error(**options).key == key


def test_registered() -> None:
    """The gcs type is built in."""
    assert "gcs" in sink_types(build_plugin_manager())


def _http(status: int, headers: dict[str, str] | None = None) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(None, (), status=status, message="msg",  # type: ignore[arg-type]
                                       headers=CIMultiDict(headers or {}))


def test_classification_like_s3() -> None:
    """429/5xx/timeouts/connection errors retry (with Retry-After); 404/403/400 are permanent."""
    err = classify_gcs_error(_http(503, {"Retry-After": "4"}))
    assert isinstance(err, RetryableError) and err.retry_after == 4
    for exc in (_http(429), _http(500), _http(408), asyncio.TimeoutError(),
                aiohttp.ClientConnectionError("refused"), OSError("no route")):
        assert isinstance(classify_gcs_error(exc), RetryableError), exc
    assert "not found" in str(classify_gcs_error(_http(404), "audit"))
    for exc in (_http(404), _http(403), _http(401), _http(400)):
        assert isinstance(classify_gcs_error(exc), PermanentError), exc


@pytest.mark.parametrize("fmt, suffix, content_type", [
    ("native", ".jsonl.gz", "application/x-ndjson"),
    ("ocsf", ".ocsf.jsonl.gz", "application/x-ndjson"),
    ("cef", ".cef.log.gz", "text/plain"),
])
def test_format_names_the_objects(tmp_path: Path, fmt: str, suffix: str, content_type: str) -> None:
    """With a format and the default key_template, object names carry it (as s3's do);
    CEF objects are text; a key_template of the operator's is kept."""
    import logging

    from auditshipd.plugin import Batch, SinkContext
    from auditshipd.sinks.gcs import GcsSink

    ctx = SinkContext("g", tmp_path, logging.getLogger("test"), format=fmt)
    sink = GcsSink("g", GcsOptions(bucket="b"), ctx)
    batch = Batch([{"id": "a", "action": "x", "occurred_at": "2024-05-17T13:59:58Z"}])
    from auditshipd.sinks.key_template import content_digest, object_key
    digest = content_digest(batch.jsonl())
    assert object_key(sink.key_template, batch, "g", fmt) == (
        f"audit/2024/05/17/13/a-a-{digest}{suffix}")
    assert sink.content_type == content_type
    own = GcsSink("g", GcsOptions(bucket="b", key_template="{format}/{first_id}-{last_id}"), ctx)
    assert object_key(own.key_template, batch, "g", fmt) == f"{fmt}/a-a"
