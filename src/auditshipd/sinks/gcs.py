"""The ``gcs`` sink: each batch becomes one JSON Lines object in a Google Cloud Storage bucket.

The object name is rendered from ``key_template`` (shared with the s3 sink) with the
date of the batch's first event, its first/last event ids and, by default, ``{digest}``
of its body: a batch sent again after a crash with the same events gets the same name
and the same bytes; one that differs is a new, possibly overlapping object (events carry
their ids for deduplication) and never replaces another batch's. Bodies are
gzipped by default (``mtime=0``: a replay gives the same bytes) and stored with
``contentEncoding: gzip``. A name with ``{digest}`` is uploaded create-only
(``ifGenerationMatch=0``), and 412 (it exists) counts as delivered: a retry after an
upload whose answer was lost succeeds even in a bucket with a retention policy, which
refuses to overwrite (403). Such a 403 for any name counts as delivered when the object
there holds the same bytes (its MD5).

Credentials come from ``credentials_file`` (a service-account JSON key) or, without
it, from the environment as gcloud-aio-auth resolves it (``GOOGLE_APPLICATION_CREDENTIALS``,
the gcloud user credentials, the metadata server). With ``endpoint_url`` (an emulator)
no credentials are used. gcloud-aio-storage is the optional extra ``auditshipd[gcs]``.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import importlib
import os
from typing import Any

import aiohttp

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
from ._checks import positive_floats, split_url
from ._http_common import RETRYABLE_STATUSES, make_session, parse_retry_after
from .key_template import (
    DEFAULT_KEY_TEMPLATE,
    check_key_template,
    key_part,
    object_name,
    template_for,
)

__all__ = ["GcsOptions", "GcsSink", "classify_gcs_error", "register_sink_types",
           "validate_options"]

_MISSING_EXTRA = "the gcs sink needs the optional extra: pip install 'auditshipd[gcs]'"
FORBIDDEN = 403
PRECONDITION_FAILED = 412


class GcsOptions(SinkOptions):
    """Keys of a ``gcs`` ``[[sinks]]`` table."""

    bucket: str
    key_template: str = DEFAULT_KEY_TEMPLATE
    gzip: bool = True
    credentials_file: str | None = None
    endpoint_url: str | None = None
    timeout: float = 30.0


def validate_options(options: GcsOptions) -> None:
    """Checks msgspec cannot express; raises ConfigError naming the key."""
    if not options.bucket.strip() or "/" in options.bucket:
        raise ConfigError("must be a bucket name (no '/'; the path goes in key_template)",
                          key="bucket")
    check_key_template(options.key_template)
    if options.endpoint_url is not None:
        parts = split_url(options.endpoint_url, "endpoint_url")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                "must be an http:// or https:// URL, e.g. http://127.0.0.1:9023",
                key="endpoint_url",
            )
    if options.credentials_file is not None and not os.path.isfile(options.credentials_file):
        raise ConfigError(f"file {options.credentials_file!r} not found", key="credentials_file")
    positive_floats(options)
    if not module_available("gcloud.aio.storage"):
        raise ConfigError(_MISSING_EXTRA, key="type")


def classify_gcs_error(exc: BaseException, bucket: str = "") -> SinkError:
    """Turn what gcloud-aio-storage/aiohttp raised into a retry decision."""
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RetryableError("GCS request timed out")
    if isinstance(exc, aiohttp.ClientResponseError):
        status = exc.status
        text = f"GCS answered HTTP {status}: {exc.message}".rstrip(": ")
        if status in RETRYABLE_STATUSES or status >= 500:
            headers = exc.headers or {}
            return RetryableError(text, retry_after=parse_retry_after(headers.get("Retry-After")))
        hint = ""
        if status == 404:
            hint = f" (bucket {bucket!r} not found: create it or fix the sink's bucket key)"
        elif status == 403 and "retention" in str(exc.message).lower():
            hint = (" (the bucket's retention policy keeps another object under this name:"
                    " put {digest} in key_template)")
        elif status in (401, 403):
            hint = " (check the credentials and the bucket's IAM: storage.objects.create)"
        return PermanentError(text + hint)
    # Connection refused/reset, DNS, missing or expired credentials: the journal holds
    # the data until the store or the credentials are back.
    return RetryableError(f"GCS request failed: {type(exc).__name__}: {exc}")


def _import_storage() -> Any:
    try:
        return importlib.import_module("gcloud.aio.storage").Storage
    except ImportError:
        raise ConfigError(_MISSING_EXTRA, key="type") from None


class GcsSink:
    """Writes each batch as one object ``key_template`` in ``bucket``."""

    def __init__(self, name: str, options: GcsOptions, context: SinkContext):
        self.name = name
        self.options = options
        self.context = context
        # With a format, the default names carry it and CEF objects are text.
        self.key_template = template_for(options.key_template, context.format)
        self.content_type = "text/plain" if context.format == "cef" else "application/x-ndjson"
        self._storage_cls = _import_storage()
        self._session: aiohttp.ClientSession | None = None
        self._storage: Any = None

    async def start(self) -> None:
        if self._storage is not None:
            return
        o = self.options
        self._session = make_session(timeout=o.timeout)
        kwargs: dict[str, Any] = {"session": self._session}
        if o.endpoint_url:
            kwargs["api_root"] = o.endpoint_url.rstrip("/")
        if o.credentials_file:
            kwargs["service_file"] = o.credentials_file
        self._storage = self._storage_cls(**kwargs)

    async def send(self, batch: Batch) -> None:
        if not batch.events:
            return
        await self.start()
        o = self.options
        raw = body = batch.jsonl()
        metadata: dict[str, Any] = {
            "metadata": {
                "events": str(len(batch)),
                "first-id": key_part(batch.first_id),
                "last-id": key_part(batch.last_id),
            },
        }
        if o.gzip:
            # mtime=0: a replayed batch gives byte-identical objects (same MD5).
            body = gzip.compress(body, compresslevel=6, mtime=0)
            # gcloud-aio turns header-style keys into the JSON API's names
            # (Content-Encoding -> contentEncoding); "contentEncoding" would become
            # "contentencoding", which GCS ignores.
            metadata["Content-Encoding"] = "gzip"
        name, create_only = object_name(self.key_template, batch, self.name,
                                        self.context.format, raw, gzip=o.gzip)
        try:
            await asyncio.wait_for(
                self._storage.upload(
                    o.bucket, name, body, content_type=self.content_type,
                    metadata=metadata, timeout=int(max(1, o.timeout)),
                    # Create only: no live object of that name (generation 0), else 412.
                    parameters={"ifGenerationMatch": "0"} if create_only else None,
                ),
                o.timeout + 5,
            )
        except Exception as exc:
            status = exc.status if isinstance(exc, aiohttp.ClientResponseError) else 0
            # 412: the name holds the digest of the body, so the object there holds these
            # very bytes (an earlier attempt landed and its answer was lost). 403 may be a
            # retention policy refusing to overwrite (create-only or not): delivered if
            # the object there holds these bytes (its MD5 tells), else the refusal stands.
            if (create_only and status == PRECONDITION_FAILED) or (
                    status == FORBIDDEN and await self._holds(name, body)):
                self.context.logger.debug("gs://%s/%s is already stored", o.bucket, name)
                return
            raise classify_gcs_error(exc, o.bucket) from exc

    async def _holds(self, name: str, body: bytes) -> bool:
        """Whether object ``name`` is there holding ``body`` (by its MD5; False when that
        cannot be read)."""
        o = self.options
        try:
            meta = await asyncio.wait_for(
                self._storage.download_metadata(o.bucket, name, timeout=int(max(1, o.timeout))),
                o.timeout + 5,
            )
        except Exception:
            return False
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        return isinstance(meta, dict) and meta.get("md5Hash") == md5

    async def close(self) -> None:
        storage, session = self._storage, self._session
        self._storage = self._session = None
        if storage is not None:
            try:
                await storage.close()
            except Exception:
                pass
        if session is not None:
            await session.close()


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "gcs",
            GcsOptions,
            GcsSink,
            "Google Cloud Storage: one gzipped JSON Lines object per batch",
            validate=validate_options,
        )
    ]
