"""The ``azure_blob`` sink: each batch becomes one JSON Lines block blob in a container.

The blob name is rendered from ``key_template`` (shared with the s3 and gcs sinks) with
the date of the batch's first event, its first/last event ids and, by default,
``{digest}`` of its body: a batch sent again after a crash with the same events gets the
same name and the same bytes; one that differs is a new, possibly overlapping blob
(events carry their ids for deduplication) and never replaces another batch's. Bodies are gzipped
by default (``mtime=0``: a replay gives the same bytes) and stored with
``Content-Encoding: gzip``. A name with ``{digest}`` is uploaded create-only
(``If-None-Match: *``), and "already exists" counts as delivered: a retry after an
upload whose answer was lost succeeds even in a container with an immutability policy
or a legal hold, which refuses to overwrite (409). Such a refusal for any name counts as
delivered when the blob there holds the same bytes (its MD5, stored with every blob).

Authentication is one of: a connection string, a SAS token or the storage account key.
The account comes from ``account_url`` (``https://ACCOUNT.blob.core.windows.net``) or,
for Azurite and other emulators, from ``endpoint_url`` (path style,
``http://127.0.0.1:10000/devstoreaccount1``). The SDK's own retries are switched off:
retries, backoff and dead letters are the core's. azure-storage-blob (its aio API) is
the optional extra ``auditshipd[azure]``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import importlib
import logging
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from ..config.env import is_placeholder
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
from ._http_common import RETRYABLE_STATUSES, parse_retry_after, scrub
from .key_template import (
    DEFAULT_KEY_TEMPLATE,
    check_key_template,
    key_part,
    object_name,
    template_for,
)

__all__ = ["AzureBlobOptions", "AzureBlobSink", "account_name_of", "classify_azure_error",
           "register_sink_types", "validate_options"]

_MISSING_EXTRA = "the azure_blob sink needs the optional extra: pip install 'auditshipd[azure]'"
_AUTH_KEYS = ("connection_string", "sas_token", "account_key")

# Container names: 3-63 lowercase letters, digits and single hyphens, starting and ending
# with a letter or digit ("$root" and "$logs" are Azure's own).
_CONTAINER_RE = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9]))*$")
# Error codes Azure answers with a 4xx status that a later attempt can still succeed with.
_RETRYABLE_CODES = frozenset({"OperationTimedOut", "ServerBusy", "InternalError"})
# Refusals of a container with an immutability policy or a legal hold to modify a blob.
_IMMUTABLE = frozenset({"BlobImmutableDueToPolicy", "BlobImmutableDueToLegalHold"})
_SDK_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
# A SAS signature in any URL or text (redacted even if the token was not configured here).
_SIG_RE = re.compile(r"(?i)(\bsig=)[^&\s'\"]+")


class AzureBlobOptions(SinkOptions):
    """Keys of an ``azure_blob`` ``[[sinks]]`` table."""

    container: str
    account_url: str | None = None
    endpoint_url: str | None = None
    connection_string: str | None = None
    sas_token: str | None = None
    account_key: str | None = None
    account_name: str | None = None
    key_template: str = DEFAULT_KEY_TEMPLATE
    gzip: bool = True
    tls_verify: bool = True
    ca_file: str | None = None
    timeout: float = 30.0


def _check_url(value: str, key: str, example: str) -> None:
    parts = split_url(value, key)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"must be an http:// or https:// URL without a query, e.g. {example}",
                          key=key)


def _connection_settings(conn_str: str) -> dict[str, str]:
    settings = {}
    for part in conn_str.strip().rstrip(";").split(";"):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            # The value is a secret: say what is wrong, never echo it.
            raise ConfigError("is not a connection string (Key=Value pairs separated by ';')",
                              key="connection_string")
        settings[name.strip().lower()] = value
    return settings


def account_name_of(url: str) -> str | None:
    """The storage account named by ``url``: ``ACCOUNT.blob.core.windows.net`` (and other
    Azure clouds) or, for an emulator's path-style URL, the first path segment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0] or None
    segment = parts.path.strip("/").split("/", 1)[0]
    return unquote(segment) or None


def validate_options(options: AzureBlobOptions) -> None:
    """Checks msgspec cannot express; raises ConfigError naming the key (never a secret)."""
    o = options
    if not _CONTAINER_RE.match(o.container):
        raise ConfigError("must be a container name: 3-63 lowercase letters, digits and "
                          "single hyphens (the path goes in key_template)", key="container")
    check_key_template(o.key_template)
    given = [k for k in _AUTH_KEYS if getattr(o, k)]
    if not given:
        raise ConfigError("no credentials: set one of connection_string, sas_token or "
                          "account_key", key="connection_string")
    if len(given) > 1:
        raise ConfigError(f"set only one of {', '.join(given)}", key=given[1])
    if o.account_url is not None:
        _check_url(o.account_url, "account_url", "https://acme.blob.core.windows.net")
    if o.endpoint_url is not None:
        _check_url(o.endpoint_url, "endpoint_url", "http://127.0.0.1:10000/devstoreaccount1")
    if o.connection_string:
        for key in ("account_url", "endpoint_url", "account_name"):
            if getattr(o, key) is not None:
                raise ConfigError("not with connection_string, which names the account and its "
                                  "endpoint (AccountName=, BlobEndpoint=)", key=key)
        settings = _connection_settings(o.connection_string)
        if not is_placeholder(o.connection_string) and settings.get(
                "usedevelopmentstorage", "").lower() != "true" and not (
            ("blobendpoint" in settings or "accountname" in settings)
            and ("accountkey" in settings or "sharedaccesssignature" in settings)
        ):
            raise ConfigError("needs AccountName= or BlobEndpoint=, and AccountKey= or "
                              "SharedAccessSignature=", key="connection_string")
    else:
        if o.account_url is None and o.endpoint_url is None:
            raise ConfigError("required (or endpoint_url for an emulator, or connection_string)",
                              key="account_url")
        if o.sas_token and "sig=" not in o.sas_token and not is_placeholder(o.sas_token):
            raise ConfigError("is not a SAS token (the query string with sv=...&sig=...)",
                              key="sas_token")
        if o.account_key and not is_placeholder(o.account_key):
            try:
                base64.b64decode(o.account_key, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError("is not a base64 storage account key", key="account_key") from None
            if not (o.account_name or account_name_of(_endpoint(o))):
                raise ConfigError("required with account_key when the URL does not name the "
                                  "account", key="account_name")
    readable_file(o.ca_file, "ca_file")
    positive_floats(o)
    if not module_available("azure.storage.blob.aio"):
        raise ConfigError(_MISSING_EXTRA, key="type")


def _endpoint(o: AzureBlobOptions) -> str:
    return (o.endpoint_url or o.account_url or "").rstrip("/")


def _secrets(o: AzureBlobOptions) -> list[str]:
    out = [o.sas_token, o.sas_token.lstrip("?") if o.sas_token else None, o.account_key]
    if o.connection_string:
        out.append(o.connection_string)
        settings = _connection_settings(o.connection_string)
        out += [settings.get("accountkey"), settings.get("sharedaccesssignature")]
    # Longest first: a connection string is masked whole before the key inside it.
    return sorted({s for s in out if s}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` without the configured secrets nor any SAS signature."""
    return _SIG_RE.sub(r"\1***", scrub(text, secrets))


def _first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""


def _error_code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None) or ""
    return str(getattr(code, "value", code))  # a StorageErrorCode or a plain string


def classify_azure_error(exc: BaseException, container: str = "") -> SinkError:
    """Turn what azure-storage-blob raised into a retry decision (a message without secrets
    is made by the caller with :func:`redact`)."""
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RetryableError("Azure Blob Storage request timed out")
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        code = _error_code(exc)
        reason = _first_line(getattr(exc, "reason", "")) or "error"
        text = f"Azure Blob Storage answered HTTP {status} {reason}"
        if code:
            text += f" ({code})"
        if status in RETRYABLE_STATUSES or status >= 500 or code in _RETRYABLE_CODES:
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None) or {}
            return RetryableError(text, retry_after=parse_retry_after(headers.get("Retry-After")))
        hint = ""
        if status == 404 and code in ("", "ContainerNotFound"):
            hint = (f": container {container!r} not found: create it or fix the sink's "
                    "container key")
        elif code in _IMMUTABLE:
            hint = (": the container's immutability policy or legal hold keeps another blob "
                    "under this name: put {digest} in key_template")
        elif status in (401, 403):
            hint = (": check the credentials (key, SAS token: its expiry, permissions "
                    "c and w, resource types) and the account's network rules")
        return PermanentError(text + hint)
    if isinstance(exc, ValueError):
        # The SDK refuses a malformed credential before sending anything.
        return PermanentError(f"Azure Blob Storage client refused the settings: {exc}")
    # ServiceRequestError / ServiceResponseError (refused, reset, DNS, TLS handshake)
    # and anything else: the journal holds the data until the service is back.
    return RetryableError(f"Azure Blob Storage request failed: {type(exc).__name__}: "
                          f"{_first_line(exc)}")


def _import_sdk() -> tuple[Any, Any, Any]:
    try:
        aio = importlib.import_module("azure.storage.blob.aio")
        blob = importlib.import_module("azure.storage.blob")
        credentials = importlib.import_module("azure.core.credentials")
    except ImportError:
        raise ConfigError(_MISSING_EXTRA, key="type") from None
    return aio.BlobServiceClient, blob.ContentSettings, credentials.AzureNamedKeyCredential


class AzureBlobSink:
    """Writes each batch as one block blob ``key_template`` in ``container``."""

    def __init__(self, name: str, options: AzureBlobOptions, context: SinkContext):
        self.name = name
        self.options = options
        self.context = context
        # With a format, the default names carry it and CEF objects are text.
        self.key_template = template_for(options.key_template, context.format)
        self.content_type = "text/plain" if context.format == "cef" else "application/x-ndjson"
        self._service_cls, self._content_settings, self._named_key = _import_sdk()
        self._secrets = _secrets(options)
        self._service: Any = None
        self._container: Any = None

    def _client_kwargs(self) -> dict[str, Any]:
        o = self.options
        return {
            # The core retries (with backoff, Retry-After and dead letters): one attempt here.
            "retry_total": 0,
            "connection_timeout": o.timeout,
            "read_timeout": o.timeout,
            "connection_verify": o.ca_file if (o.tls_verify and o.ca_file) else o.tls_verify,
        }

    async def start(self) -> None:
        if self._container is not None:
            return
        o = self.options
        # azure-core logs every request and response (headers included) at INFO: two
        # multi-line records per batch. Our own log says what was delivered or failed;
        # an operator who sets this logger's level explicitly keeps that level.
        sdk_log = logging.getLogger(_SDK_HTTP_LOGGER)
        if sdk_log.level == logging.NOTSET:
            sdk_log.setLevel(logging.WARNING)
        try:
            if o.connection_string:
                service = self._service_cls.from_connection_string(
                    o.connection_string, **self._client_kwargs())
            else:
                credential: Any
                if o.sas_token:
                    credential = o.sas_token.lstrip("?")
                else:
                    account = o.account_name or account_name_of(_endpoint(o))
                    credential = self._named_key(account, o.account_key)
                service = self._service_cls(_endpoint(o), credential=credential,
                                            **self._client_kwargs())
        except Exception as exc:
            raise self._error(exc) from None
        self._service = service
        self._container = service.get_container_client(o.container)

    def _error(self, exc: BaseException) -> SinkError:
        err = classify_azure_error(exc, self.options.container)
        err.args = (redact(str(err), self._secrets),)
        return err

    async def send(self, batch: Batch) -> None:
        if not batch.events:
            return
        await self.start()
        o = self.options
        raw = body = batch.jsonl()
        encoding = None
        if o.gzip:
            # mtime=0: a replayed batch gives a byte-identical blob.
            body = gzip.compress(body, compresslevel=6, mtime=0)
            encoding = "gzip"
        name, create_only = object_name(self.key_template, batch, self.name,
                                        self.context.format, raw, gzip=o.gzip)
        # The MD5 is kept with the blob (whatever way it is uploaded): what tells that a
        # blob an immutability policy refuses to overwrite holds these bytes.
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        settings = self._content_settings(content_type=self.content_type,
                                          content_encoding=encoding, content_md5=md5)
        # Metadata names must be C# identifiers: no hyphens.
        metadata = {"events": str(len(batch)), "first_id": key_part(batch.first_id),
                    "last_id": key_part(batch.last_id)}
        try:
            await asyncio.wait_for(
                # overwrite=False: If-None-Match: * (create-only).
                self._container.upload_blob(
                    name, body, blob_type="BlockBlob", overwrite=not create_only,
                    content_settings=settings, metadata=metadata, timeout=int(max(1, o.timeout)),
                ),
                o.timeout + 5,
            )
        except Exception as exc:
            code = _error_code(exc)
            # BlobAlreadyExists: the name holds the digest of the body, so the blob there
            # holds these very bytes (an earlier attempt landed and its answer was lost).
            # An immutability refusal (create-only or not) means the blob is there too:
            # delivered if it holds these bytes (its MD5 tells), else the refusal stands.
            if (create_only and code == "BlobAlreadyExists") or (
                    code in _IMMUTABLE and await self._holds(name, md5)):
                self.context.logger.debug("blob %s/%s is already stored", o.container, name)
                return
            raise self._error(exc) from None

    async def _holds(self, name: str, md5: bytes) -> bool:
        """Whether blob ``name`` is there with the content MD5 ``md5`` (False when that
        cannot be read)."""
        timeout = self.options.timeout
        try:
            props = await asyncio.wait_for(
                self._container.get_blob_client(name).get_blob_properties(
                    timeout=int(max(1, timeout))),
                timeout + 5,
            )
        except Exception:
            return False
        stored = getattr(props.content_settings, "content_md5", None)
        return stored is not None and bytes(stored) == md5

    async def close(self) -> None:
        service = self._service
        self._service = self._container = None
        if service is not None:
            try:
                await service.close()
            except Exception:
                pass


@hookimpl
def register_sink_types() -> list[SinkType]:
    return [
        SinkType(
            "azure_blob",
            AzureBlobOptions,
            AzureBlobSink,
            "Azure Blob Storage: one gzipped JSON Lines block blob per batch",
            validate=validate_options,
            secrets=("connection_string", "sas_token", "account_key"),
        )
    ]
