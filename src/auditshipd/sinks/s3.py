"""The ``s3`` sink: each batch becomes one gzipped JSON Lines object in a bucket.

The object key is rendered from ``key_template`` with the date of the batch's first
event, its first/last event ids and, by default, ``{digest}`` of its body: a batch sent
again after a crash with the same events writes the same object with the same bytes;
one that differs is a new, possibly overlapping object (events carry their ids for
deduplication) and never replaces another batch's. A name with ``{digest}`` is uploaded
create-only (``If-None-Match: *``, unless ``create_only = false`` for a store that refuses
the header), and 412 (it exists) counts as delivered: a batch sent again whose earlier
upload landed is not written a second time (in a versioned or Object Lock bucket, a
second locked version). Every PUT carries ``Content-MD5`` (buckets with Object Lock
refuse uploads without it).

Credentials come from the standard AWS chain (environment, shared config and
credentials files, ``profile``, container and instance metadata), resolved by
aiobotocore itself. An ``https`` endpoint behind a private CA is verified with
``ca_file`` (else botocore's bundle: ``AWS_CA_BUNDLE``, ``~/.aws/config``, its own).
aiobotocore is the optional extra ``auditshipd[s3]``; it is
imported only when an ``s3`` sink is configured.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import importlib
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from ..netguard import BlockedDestination, check_literal, destination_host
from ..plugin import (
    Batch,
    ConfigError,
    PermanentError,
    RetryableError,
    SinkContext,
    SinkError,
    SinkOptions,
    SinkType,
    hookimpl,
    module_available,
)
from ._checks import positive_floats, readable_file, split_url
from ._http_common import parse_retry_after
from .key_template import (
    DEFAULT_KEY_TEMPLATE,
    FORMAT_KEY_TEMPLATES,
    KEY_PLACEHOLDERS,
    check_key_template,
    key_part,
    object_key,
    object_name,
    template_for,
)

__all__ = [
    "DEFAULT_KEY_TEMPLATE",
    "FORMAT_KEY_TEMPLATES",
    "KEY_PLACEHOLDERS",
    "S3Options",
    "S3Sink",
    "classify_s3_error",
    "object_key",
    "register_sink_types",
    "validate_options",
]

_MISSING_EXTRA = "the s3 sink needs the optional extra: pip install 'auditshipd[s3]'"

_STORAGE_CLASSES = frozenset({
    "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
    "GLACIER", "DEEP_ARCHIVE", "OUTPOSTS", "GLACIER_IR", "SNOW", "EXPRESS_ONEZONE",
})
_SSE_MODES = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})
_LOCK_MODES = frozenset({"GOVERNANCE", "COMPLIANCE"})
# What botocore lets through as a bucket (S3 itself is stricter; S3-compatible stores
# and old us-east-1 buckets are not), and a region: one host label.
_BUCKET = re.compile(r"[a-zA-Z0-9.\-_]{1,255}")
_BUCKET_ARN = re.compile(
    r"arn:aws[^:]*:(?:s3|s3-object-lambda):[a-z\-0-9]*:[0-9]{12}:accesspoint[/:][a-zA-Z0-9\-.]{1,63}"
    r"|arn:aws[^:]*:s3-outposts:[a-z\-0-9]+:[0-9]{12}:outpost[/:][a-zA-Z0-9\-]{1,63}"
    r"[/:]accesspoint[/:][a-zA-Z0-9\-]{1,63}"
)
_REGION = re.compile(r"(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)")
# botocore exceptions for a request it refuses to build: sending it again cannot help.
_INVALID_REQUEST = frozenset({"ParamValidationError", "ValidationError", "InvalidRegionError"})

# Error codes S3 answers with a 4xx status that a later attempt can still succeed with.
_RETRYABLE_CODES = frozenset({
    "RequestTimeout", "RequestTimeTooSkewed", "ExpiredToken", "TokenRefreshRequired",
    "SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "OperationAborted",
    "ServiceUnavailable", "InternalError",
    # A create-only upload racing another write of the same name: S3 asks for a retry.
    "ConditionalRequestConflict",
})
PRECONDITION_FAILED = 412
NOT_IMPLEMENTED = 501


class S3Options(SinkOptions):
    """Keys of an ``s3`` ``[[sinks]]`` table."""

    bucket: str
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    # Static credentials (both or neither); without them the AWS default chain is used.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    key_template: str = DEFAULT_KEY_TEMPLATE
    # Names with {digest} are uploaded with If-None-Match: * (false: a store that refuses it).
    create_only: bool = True
    storage_class: str | None = None
    server_side_encryption: str | None = None
    sse_kms_key_id: str | None = None
    object_lock_mode: str | None = None
    object_lock_retain_days: int | None = None
    # A PEM CA bundle to verify the endpoint's certificate with (a store behind a private
    # CA); without it botocore's own (AWS_CA_BUNDLE, ca_bundle of ~/.aws/config, certifi).
    ca_file: str | None = None
    timeout: float = 30.0


def validate_options(options: S3Options) -> None:
    """Checks msgspec cannot express; raises ConfigError naming the key."""
    if not (_BUCKET.fullmatch(options.bucket) or _BUCKET_ARN.fullmatch(options.bucket)):
        raise ConfigError("must be a bucket name (letters, digits, '.', '-' and '_'; the path"
                          " goes in key_template) or an access point ARN", key="bucket")
    if options.region is not None and not _REGION.fullmatch(options.region):
        raise ConfigError("must be a region name like eu-west-1", key="region")
    check_key_template(options.key_template)
    if bool(options.access_key_id) != bool(options.secret_access_key):
        missing = "secret_access_key" if options.access_key_id else "access_key_id"
        raise ConfigError("access_key_id and secret_access_key must be given together",
                          key=missing)
    if options.endpoint_url is not None:
        parts = split_url(options.endpoint_url, "endpoint_url")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                "must be an http:// or https:// URL, e.g. https://s3.example.com:9000",
                key="endpoint_url",
            )
    if options.storage_class is not None and options.storage_class not in _STORAGE_CLASSES:
        known = ", ".join(sorted(_STORAGE_CLASSES))
        raise ConfigError(f"unknown storage class (known: {known})", key="storage_class")
    sse = options.server_side_encryption
    if sse is not None and sse not in _SSE_MODES:
        raise ConfigError(
            "must be one of AES256, aws:kms, aws:kms:dsse", key="server_side_encryption"
        )
    if options.sse_kms_key_id is not None and not (sse or "").startswith("aws:kms"):
        raise ConfigError(
            'needs server_side_encryption = "aws:kms" (or "aws:kms:dsse")',
            key="sse_kms_key_id",
        )
    if options.object_lock_mode is not None:
        if options.object_lock_mode not in _LOCK_MODES:
            raise ConfigError("must be GOVERNANCE or COMPLIANCE", key="object_lock_mode")
        if options.object_lock_retain_days is None:
            raise ConfigError(
                "object_lock_mode needs object_lock_retain_days", key="object_lock_retain_days"
            )
    if options.object_lock_retain_days is not None:
        if options.object_lock_mode is None:
            raise ConfigError(
                "object_lock_retain_days needs object_lock_mode", key="object_lock_mode"
            )
        if options.object_lock_retain_days < 1:
            raise ConfigError("must be at least 1", key="object_lock_retain_days")
    readable_file(options.ca_file, "ca_file")
    positive_floats(options)
    if not module_available("aiobotocore"):
        raise ConfigError(_MISSING_EXTRA, key="type")


def _answer(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and S3 error code of a store's answer in ``exc`` ((0, "") when the
    store did not answer)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0, ""
    code = str((response.get("Error") or {}).get("Code") or "")
    meta = response.get("ResponseMetadata") or {}
    return int(meta.get("HTTPStatusCode") or 0), code


def classify_s3_error(exc: BaseException, *, create_only: bool = False) -> SinkError:
    """Turn what aiobotocore raised into a retry decision. ``create_only``: the request
    carried ``If-None-Match: *``, which a store may not implement."""
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RetryableError("S3 request timed out")
    if any(cls.__name__ in _INVALID_REQUEST for cls in type(exc).__mro__):
        return PermanentError(f"S3 request refused by the client: {exc}")
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status, code = _answer(exc)
        message = str((response.get("Error") or {}).get("Message") or "")
        headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        text = f"S3 answered {status} {code}: {message}".rstrip(": ")
        if create_only and (status == NOT_IMPLEMENTED or code == "NotImplemented"):
            # A store without conditional writes: held (not dead-lettered) until the
            # operator turns them off for it.
            return RetryableError(text + " (the store does not implement create-only uploads,"
                                  " If-None-Match: *: set create_only = false for this sink)")
        if status >= 500 or status == 429 or code in _RETRYABLE_CODES:
            return RetryableError(text, retry_after=parse_retry_after(
                headers.get("retry-after") or headers.get("Retry-After")))
        if 400 <= status < 500 or code:
            hint = ""
            if code == "NoSuchBucket":
                hint = " (create the bucket or fix the sink's bucket key)"
            elif code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                hint = " (check the AWS credentials and the bucket policy)"
            return PermanentError(text + hint)
        return RetryableError(text)
    # Connection refused/reset, DNS, read timeouts, missing or expired credentials:
    # the journal holds the data until the store or the credentials are back.
    why = ""
    inner = (getattr(exc, "kwargs", None) or {}).get("error")
    if inner is not None:  # botocore wraps aiohttp's error: keep its reason (a refused address)
        why = f" ({getattr(inner, 'os_error', None) or inner})"
    return RetryableError(f"S3 request failed: {type(exc).__name__}: {exc}{why}")


def _import_aiobotocore() -> tuple[Any, Any]:
    try:
        session = importlib.import_module("aiobotocore.session")
        config = importlib.import_module("aiobotocore.config")
    except ImportError:
        raise ConfigError(_MISSING_EXTRA, key="type") from None
    return session.AioSession, config.AioConfig


class S3Sink:
    """Writes each batch as one object ``key_template`` in ``bucket``."""

    def __init__(self, name: str, options: S3Options, context: SinkContext):
        self.name = name
        self.options = options
        self.context = context
        self.format = context.format
        self.key_template = template_for(options.key_template, self.format)
        self._session_cls, self._config_cls = _import_aiobotocore()
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def start(self) -> None:
        o = self.options
        guarded = self.context.resolver is not None
        config = self._config_cls(
            connect_timeout=o.timeout,
            read_timeout=o.timeout,
            # Self-service streams connect only where the resolver allows (netguard), and
            # directly: a proxy from the environment would connect on their behalf, and an
            # endpoint from the environment or ~/.aws/config (AWS_ENDPOINT_URL_S3) would
            # send them to the operator's own store: only their endpoint_url counts.
            **({"connector_args": {"resolver": self.context.resolver}, "proxies": {},
                "ignore_configured_endpoint_urls": True} if guarded else {}),
            # The core owns retries and backoff; one attempt per send().
            retries={"total_max_attempts": 1},
            # We send Content-MD5 ourselves; the newer default checksums break many
            # S3-compatible stores.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = self._session_cls(profile=o.profile)
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(
                session.create_client(
                    "s3", region_name=o.region, endpoint_url=o.endpoint_url, config=config,
                    aws_access_key_id=o.access_key_id, aws_secret_access_key=o.secret_access_key,
                    # None: botocore's default bundle (AWS_CA_BUNDLE, ~/.aws/config).
                    verify=o.ca_file,
                )
            )
        except Exception as exc:
            await stack.aclose()
            if type(exc).__name__ == "ProfileNotFound":  # botocore.exceptions
                # A config mistake, but holding the cursor beats dead-lettering everything.
                raise RetryableError(f"s3 sink, key profile: {exc}") from None
            raise classify_s3_error(exc) from exc
        self._stack = stack
        if guarded:
            await self._check_endpoint()

    async def _check_endpoint(self) -> None:
        """Refuse the client's endpoint when it is an address the destination policy
        does not allow (an IP literal is connected to without the resolver)."""
        policy = getattr(self.context.resolver, "policy", None)
        if policy is None:  # a resolver without a policy: names are all it answers
            return
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
        where = destination_host(endpoint)
        try:
            if where is None:
                raise BlockedDestination(f"the S3 endpoint {endpoint!r} has no host")
            check_literal(where[0], policy)
        except BlockedDestination as exc:
            await self.close()
            raise RetryableError(f"S3 endpoint refused: {exc}") from None

    async def send(self, batch: Batch) -> None:
        if not batch.events:
            return
        if self._client is None:
            await self.start()
        params = self._put_params(batch)
        create_only = "IfNoneMatch" in params
        try:
            await asyncio.wait_for(self._client.put_object(**params), self.options.timeout)
        except Exception as exc:
            # 412 to a create-only upload: the name holds the digest of the body, so the
            # object there holds these very bytes (an earlier attempt landed, and its
            # answer may have been lost).
            if create_only and _answer(exc)[0] == PRECONDITION_FAILED:
                self.context.logger.debug("s3://%s/%s is already stored",
                                          params["Bucket"], params["Key"])
                return
            raise classify_s3_error(exc, create_only=create_only) from exc

    def _put_params(self, batch: Batch) -> dict[str, Any]:
        o = self.options
        raw = batch.jsonl()
        # mtime=0: a replayed batch gives byte-identical objects (same MD5 and ETag).
        body = gzip.compress(raw, compresslevel=6, mtime=0)
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        key, create_only = object_name(self.key_template, batch, self.name, self.format, raw)
        params: dict[str, Any] = {
            "Bucket": o.bucket,
            "Key": key,
            "Body": body,
            "ContentMD5": base64.b64encode(md5).decode("ascii"),
            "ContentType": "text/plain" if self.format == "cef" else "application/x-ndjson",
            "ContentEncoding": "gzip",
            "Metadata": {
                "events": str(len(batch)),
                "first-id": key_part(batch.first_id),
                "last-id": key_part(batch.last_id),
            },
        }
        if create_only and o.create_only:
            # Create only: S3 answers 412 when an object of that name exists.
            params["IfNoneMatch"] = "*"
        if o.storage_class:
            params["StorageClass"] = o.storage_class
        if o.server_side_encryption:
            params["ServerSideEncryption"] = o.server_side_encryption
        if o.sse_kms_key_id:
            params["SSEKMSKeyId"] = o.sse_kms_key_id
        if o.object_lock_mode and o.object_lock_retain_days:
            params["ObjectLockMode"] = o.object_lock_mode
            params["ObjectLockRetainUntilDate"] = datetime.now(timezone.utc) + timedelta(
                days=o.object_lock_retain_days
            )
        return params

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "s3",
            S3Options,
            S3Sink,
            "Amazon S3 (or an S3-compatible store): one gzipped JSON Lines object per batch",
            validate=validate_options,
            secrets=("secret_access_key",),
        )
    ]
