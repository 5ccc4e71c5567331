"""Unit tests of the s3 sink: options, object keys, error classification (no server)."""

from __future__ import annotations

import base64
import email.utils
import gzip
import hashlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from auditshipd.config import parse_config
from auditshipd.delivery.batch import Batch
from auditshipd.errors import ConfigError, PermanentError, RetryableError
from auditshipd.plugin import SinkContext
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.sinks.s3 import (
    DEFAULT_KEY_TEMPLATE,
    S3Options,
    S3Sink,
    classify_s3_error,
    object_key,
    validate_options,
)


def ev(id_: str, occurred_at: Any = "2024-05-17T23:30:00Z") -> dict[str, Any]:
    return {"id": id_, "occurred_at": occurred_at, "action": "x"}


def config_error(**options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        validate_options(S3Options(**{"bucket": "b", **options}))
    return err.value


def test_valid_options_pass() -> None:
    """A full, valid option set validates, and the validator does look at it: the same set
    with its storage class or lock retention made invalid is rejected naming that key."""
    options = S3Options(
        bucket="b", region="eu-west-1", endpoint_url="https://minio.local:9000",
        storage_class="GLACIER_IR", server_side_encryption="aws:kms", sse_kms_key_id="k",
        object_lock_mode="COMPLIANCE", object_lock_retain_days=30,
    )
    assert validate_options(options) is None
    for key, bad in (("storage_class", "GLACIER_XL"), ("object_lock_retain_days", 0)):
        with pytest.raises(ConfigError) as err:
            validate_options(msgspec.structs.replace(options, **{key: bad}))
        assert err.value.key == key


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"bucket": " "}, "bucket"),
        ({"key_template": "audit/{yyyy}/{first_id}-{last_id}-{nope}.gz"}, "key_template"),
        ({"key_template": "audit/{yyyy}.gz"}, "key_template"),
        ({"key_template": "audit/{first_id!r}-{last_id}"}, "key_template"),
        ({"key_template": "audit/{first_id-{last_id}"}, "key_template"),
        ({"endpoint_url": "minio:9000"}, "endpoint_url"),
        ({"endpoint_url": "ftp://minio:9000"}, "endpoint_url"),
        ({"storage_class": "STANDARD-IA"}, "storage_class"),
        ({"server_side_encryption": "kms"}, "server_side_encryption"),
        ({"sse_kms_key_id": "k"}, "sse_kms_key_id"),
        ({"object_lock_mode": "STRICT", "object_lock_retain_days": 1}, "object_lock_mode"),
        ({"object_lock_mode": "GOVERNANCE"}, "object_lock_retain_days"),
        ({"object_lock_retain_days": 3}, "object_lock_mode"),
        ({"timeout": 0}, "timeout"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
    ],
)
def test_invalid_options_name_their_key(options: dict[str, Any], key: str) -> None:
    """Each invalid option is a ConfigError naming that key."""
    assert config_error(**options).key == key


def test_unknown_placeholder_is_named() -> None:
    """The error for an unknown placeholder names it and lists the known ones."""
    err = config_error(key_template="a/{first_id}-{last_id}/{day}")
    assert "{day}" in str(err) and "{yyyy}" in str(err)


def test_check_config_reports_the_sink_key() -> None:
    """Through the config loader, the error names the file, the sink and the key."""
    types = sink_types(build_plugin_manager())
    text = '[[sinks]]\nname = "arch"\ntype = "s3"\nbucket = "b"\nkey_template = "{first_id}{x}{last_id}"\n'
    with pytest.raises(ConfigError, match=r"conf.toml:5: sinks\[0\] \(arch\)\.key_template"):
        parse_config(text, "conf.toml", types)
    text = '[[sinks]]\nname = "arch"\ntype = "s3"\nregion = "eu-west-1"\n'
    with pytest.raises(ConfigError, match=r"bucket: missing required key"):
        parse_config(text, "conf.toml", types)
    ok = parse_config('[[sinks]]\nname = "arch"\ntype = "s3"\nbucket = "b"\n', "c.toml", types)
    assert ok.sinks[0].options.key_template == DEFAULT_KEY_TEMPLATE


def test_key_uses_first_event_time_in_utc_and_both_ids() -> None:
    """Date parts come from the first event's occurred_at (converted to UTC)."""
    batch = Batch([ev("01A", "2024-05-17T23:30:00.123456789-02:00"), ev("01B", "2030-01-01T00:00:00Z")])
    digest = hashlib.sha256(batch.jsonl()).hexdigest()[:16]
    assert object_key(DEFAULT_KEY_TEMPLATE, batch) == f"audit/2024/05/18/01/01A-01B-{digest}.jsonl.gz"


def test_key_is_stable_and_safe() -> None:
    """The same batch always gives the same key; '/' in ids cannot add key levels."""
    batch = Batch([ev("a/b c"), ev("z")])
    key = object_key("{sink}/{yyyy}{mm}{dd}{hh}/{first_id}-{last_id}", batch, "my sink")
    assert key == "my%20sink/2024051723/a%2Fb%20c-z"
    assert object_key(DEFAULT_KEY_TEMPLATE, Batch(list(batch.events))) == object_key(DEFAULT_KEY_TEMPLATE, batch)


def test_key_without_a_usable_time_is_still_deterministic() -> None:
    """A missing or malformed occurred_at gives 'unknown' date parts, never the clock."""
    batch = Batch([ev("a", None), ev("b")])
    assert object_key(DEFAULT_KEY_TEMPLATE, batch).startswith("audit/unknown/unknown/unknown/unknown/a-b-")
    assert object_key(DEFAULT_KEY_TEMPLATE, Batch([ev("a", "2024-13-45T99:00:00Z")])).startswith("audit/unknown/")


def test_put_params_carry_gzip_body_and_its_md5(tmp_path: Path) -> None:
    """The body is gzip JSON Lines, byte-identical on replay, with a matching Content-MD5."""
    sink = S3Sink("s", S3Options(bucket="b"), SinkContext("s", tmp_path, logging.getLogger()))
    batch = Batch([ev("1"), ev("2")])
    params = sink._put_params(batch)
    assert gzip.decompress(params["Body"]) == batch.jsonl()
    assert params["ContentMD5"] == base64.b64encode(hashlib.md5(params["Body"]).digest()).decode()
    assert sink._put_params(Batch(list(batch.events)))["Body"] == params["Body"]
    assert params["ContentEncoding"] == "gzip"
    assert "ObjectLockMode" not in params and "StorageClass" not in params


@pytest.mark.parametrize(
    ("options", "create_only"),
    [
        ({}, True),
        ({"key_template": "logs/{digest}.gz"}, True),
        ({"key_template": "logs/{first_id}-{last_id}.gz"}, False),
        ({"create_only": False}, False),
    ],
)
def test_only_names_with_the_digest_are_uploaded_create_only(
        tmp_path: Path, options: dict[str, Any], create_only: bool) -> None:
    """If-None-Match: * goes with a name holding {digest} (equal names, equal bytes),
    unless the sink turns it off; a name by the ids alone is overwritten."""
    sink = S3Sink("s", S3Options(bucket="b", **options),
                  SinkContext("s", tmp_path, logging.getLogger()))
    params = sink._put_params(Batch([ev("1"), ev("2")]))
    assert params.get("IfNoneMatch") == ("*" if create_only else None)


def test_create_only_can_be_turned_off_in_the_config() -> None:
    """create_only is a key of the sink's table (a store that refuses If-None-Match)."""
    types = sink_types(build_plugin_manager())
    base = '[[sinks]]\nname = "arch"\ntype = "s3"\nbucket = "b"\n'
    assert parse_config(base, "c.toml", types).sinks[0].options.create_only is True
    off = parse_config(base + "create_only = false\n", "c.toml", types)
    assert off.sinks[0].options.create_only is False


class FakeClientError(Exception):
    def __init__(self, status: int, code: str, headers: dict[str, str] | None = None):
        super().__init__(code)
        self.response = {
            "Error": {"Code": code, "Message": "msg"},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
        }


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (404, "NoSuchBucket", False),
        (403, "AccessDenied", False),
        (403, "InvalidAccessKeyId", False),
        (400, "InvalidArgument", False),
        (400, "RequestTimeout", True),
        (400, "ExpiredToken", True),
        (503, "SlowDown", True),
        (409, "ConditionalRequestConflict", True),
        (500, "InternalError", True),
        (502, "", True),
        (429, "", True),
    ],
)
def test_client_errors_are_classified(status: int, code: str, retryable: bool) -> None:
    """S3 answers map to retryable (5xx, throttling, timeouts) or permanent (other 4xx)."""
    err = classify_s3_error(FakeClientError(status, code))
    assert isinstance(err, RetryableError if retryable else PermanentError)


def test_a_store_without_conditional_writes_is_named_and_held() -> None:
    """A store that does not implement If-None-Match on PUT (S3 itself did not before
    2024): the error says how to turn create-only uploads off, and the batch is held
    (retryable, whatever the status) rather than dead-lettered."""
    for status in (501, 400):
        err = classify_s3_error(FakeClientError(status, "NotImplemented"), create_only=True)
        assert isinstance(err, RetryableError)
        assert "set create_only = false" in str(err)
    assert "create_only" not in str(classify_s3_error(FakeClientError(501, "NotImplemented")))


def test_retry_after_is_passed_on() -> None:
    """A Retry-After header becomes the RetryableError's hint."""
    err = classify_s3_error(FakeClientError(503, "SlowDown", {"retry-after": "7"}))
    assert isinstance(err, RetryableError) and err.retry_after == 7.0
    # An HTTP date, as RFC 9110 allows: the seconds until then.
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    err = classify_s3_error(FakeClientError(503, "SlowDown", {"retry-after": later}))
    assert isinstance(err, RetryableError) and 100 < err.retry_after <= 120


def test_connection_errors_and_timeouts_are_retryable() -> None:
    """Anything without an S3 answer (refused, reset, timeout) is retryable."""
    assert isinstance(classify_s3_error(TimeoutError()), RetryableError)
    assert isinstance(classify_s3_error(ConnectionRefusedError()), RetryableError)


def test_missing_extra_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without aiobotocore, validation and the factory say which extra to install."""
    monkeypatch.setitem(sys.modules, "aiobotocore", None)
    monkeypatch.setitem(sys.modules, "aiobotocore.session", None)
    err = config_error()
    assert "pip install 'auditshipd[s3]'" in str(err)
    with pytest.raises(ConfigError, match=r"auditshipd\[s3\]"):
        S3Sink("s", S3Options(bucket="b"), SinkContext("s", tmp_path, logging.getLogger()))


def test_occurred_at_ns_keeps_the_fraction_and_the_offset() -> None:
    """The shared key_template module also gives nanosecond times (OTLP's time_unix_nano)."""
    from auditshipd.sinks.key_template import occurred_at_ns

    assert occurred_at_ns({"occurred_at": "1970-01-01T00:00:01.5Z"}) == 1_500_000_000
    assert occurred_at_ns({"occurred_at": "2024-05-17T15:59:58.123456789+02:00"}) == 1715954398123456789
    assert occurred_at_ns({"occurred_at": "2024-05-17T13:59:58Z"}) == 1715954398_000_000_000
    assert occurred_at_ns({"occurred_at": "yesterday"}) is None
    assert occurred_at_ns({}) is None
