"""Unit tests of the azure_blob sink: options, account names, error classification, redaction."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from auditshipd.errors import ConfigError, PermanentError, RetryableError
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.sinks.azure_blob import (
    AzureBlobOptions,
    account_name_of,
    classify_azure_error,
    redact,
    validate_options,
)

KEY = "c2VjcmV0LWFjY291bnQta2V5LWZvci10ZXN0cw=="
SAS = "sv=2024-08-04&ss=b&srt=co&sp=cw&se=2030-01-01T00:00:00Z&sig=c2lnbmF0dXJl%2Bc2Vj"
AZURE = "https://acme.blob.core.windows.net"


def config_error(**options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        validate_options(AzureBlobOptions(**{"container": "audit", **options}))
    return err.value


def test_valid_options_pass(tmp_path: Path) -> None:
    """Each way to authenticate validates: SAS, account key (Azure and Azurite URLs),
    connection string (Azure and development storage)."""
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    validate_options(AzureBlobOptions(container="audit", account_url=AZURE, sas_token="?" + SAS))
    validate_options(AzureBlobOptions(container="audit-logs-2", account_url=AZURE,
                                      account_key=KEY, gzip=False, ca_file=str(ca),
                                      key_template="{sink}/{first_id}-{last_id}.jsonl"))
    validate_options(AzureBlobOptions(container="audit", account_key=KEY,
                                      endpoint_url="http://127.0.0.1:10000/devstoreaccount1"))
    validate_options(AzureBlobOptions(container="audit", connection_string=(
        f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={KEY};"
        "EndpointSuffix=core.windows.net")))
    validate_options(AzureBlobOptions(container="audit",
                                      connection_string="UseDevelopmentStorage=true"))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"container": "Audit", "account_url": AZURE, "sas_token": SAS}, "container"),
        ({"container": "ab", "account_url": AZURE, "sas_token": SAS}, "container"),
        ({"container": "a--b", "account_url": AZURE, "sas_token": SAS}, "container"),
        ({"container": "audit/x", "account_url": AZURE, "sas_token": SAS}, "container"),
        ({"account_url": AZURE}, "connection_string"),
        ({"account_url": AZURE, "sas_token": SAS, "account_key": KEY}, "account_key"),
        ({"sas_token": SAS}, "account_url"),
        ({"account_url": "acme.blob.core.windows.net", "sas_token": SAS}, "account_url"),
        ({"account_url": AZURE + "?sv=1", "sas_token": SAS}, "account_url"),
        ({"endpoint_url": "ftp://127.0.0.1:10000/x", "sas_token": SAS}, "endpoint_url"),
        ({"account_url": AZURE, "sas_token": "sv=2024-08-04&sp=cw"}, "sas_token"),
        ({"account_url": AZURE, "account_key": "not base64!"}, "account_key"),
        ({"endpoint_url": "http://azurite:10000", "account_key": KEY}, "account_name"),
        ({"connection_string": "garbage"}, "connection_string"),
        ({"connection_string": "AccountName=acme"}, "connection_string"),
        ({"connection_string": "UseDevelopmentStorage=true", "account_url": AZURE},
         "account_url"),
        ({"account_url": AZURE, "sas_token": SAS, "key_template": "audit/{yyyy}.jsonl"},
         "key_template"),
        ({"account_url": AZURE, "sas_token": SAS, "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"account_url": AZURE, "sas_token": SAS, "timeout": 0}, "timeout"),
    ],
)
def test_invalid_options_name_their_key(options: dict[str, Any], key: str) -> None:
    """Each mistake is reported with the key to fix, and never with a secret's value."""
    err = config_error(**options)
    assert err.key == key
    for secret in (KEY, SAS, "garbage"):
        assert secret not in str(err)


def test_account_name_from_the_url() -> None:
    """Azure hosts name the account in their first label; emulators in the first path segment."""
    assert account_name_of(AZURE) == "acme"
    assert account_name_of("https://acme.blob.core.usgovcloudapi.net/") == "acme"
    assert account_name_of("http://127.0.0.1:10000/devstoreaccount1") == "devstoreaccount1"
    assert account_name_of("http://azurite:10000") is None


def test_registered_with_its_secrets() -> None:
    """The azure_blob type is built in and declares its secret options."""
    st = sink_types(build_plugin_manager())["azure_blob"]
    assert set(st.secrets) == {"connection_string", "sas_token", "account_key"}


class _Response:
    def __init__(self, status: int, headers: dict[str, str] | None = None):
        self.status_code = status
        self.reason = "reason"
        self.headers = headers or {}
        self.content_type = "text/plain"

    def text(self, encoding: str | None = None) -> str:
        return ""


def _http(cls: type[HttpResponseError], status: int, code: str = "",
          headers: dict[str, str] | None = None) -> HttpResponseError:
    err = cls(message="msg", response=_Response(status, headers))
    err.error_code = code  # type: ignore[attr-defined]
    return err


def test_classification_like_s3() -> None:
    """Throttling, 5xx, timeouts and connection errors retry (with Retry-After);
    a missing container, bad credentials and other 4xx are permanent."""
    err = classify_azure_error(_http(HttpResponseError, 503, "ServerBusy", {"Retry-After": "7"}))
    assert isinstance(err, RetryableError) and err.retry_after == 7
    for exc in (_http(HttpResponseError, 429), _http(HttpResponseError, 500, "InternalError"),
                _http(HttpResponseError, 408), asyncio.TimeoutError(),
                ServiceRequestError("Cannot connect to host"),
                ServiceResponseError("Connection reset")):
        assert isinstance(classify_azure_error(exc), RetryableError), exc
    missing = classify_azure_error(_http(ResourceNotFoundError, 404, "ContainerNotFound"),
                                   "audit")
    assert isinstance(missing, PermanentError)
    assert "'audit' not found" in str(missing) and "ContainerNotFound" in str(missing)
    for exc in (_http(ClientAuthenticationError, 403, "AuthenticationFailed"),
                _http(HttpResponseError, 403, "AuthorizationPermissionMismatch"),
                _http(HttpResponseError, 400, "InvalidHeaderValue"),
                _http(HttpResponseError, 409, "LeaseIdMissing"),
                ValueError("Connection string is either blank or malformed.")):
        assert isinstance(classify_azure_error(exc), PermanentError), exc


def test_redact_removes_keys_and_signatures() -> None:
    """Configured secrets and any SAS signature are masked in error text."""
    text = f"GET {AZURE}/audit/x?{SAS} failed; key {KEY}; other ?sv=1&sig=abcDEF%2Bxyz&se=2"
    out = redact(text, [KEY, SAS])
    assert KEY not in out and "c2lnbmF0dXJl" not in out and "abcDEF" not in out
    assert "sig=***" in out


def test_example_table_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example azure_blob table of config/sinks-example.toml passes the loader's checks,
    and its credential comes from the environment."""
    from auditshipd.config import parse_config

    text = (Path(__file__).resolve().parents[2] / "config" / "sinks-example.toml").read_text()
    table = next(t for t in text.split("[[sinks]]") if 'type = "azure_blob"' in t)
    monkeypatch.setenv("AZURE_STORAGE_SAS", SAS)
    cfg = parse_config("[[sinks]]" + table, "example", sink_types(build_plugin_manager()))
    options = cfg.sinks[0].options
    assert options.sas_token == SAS and options.account_url == AZURE


def test_format_names_the_blobs(tmp_path: Path) -> None:
    """With a format and the default key_template, blob names carry it (as s3's do); CEF
    blobs are text."""
    import logging

    from auditshipd.plugin import Batch, SinkContext
    from auditshipd.sinks.azure_blob import AzureBlobSink
    from auditshipd.sinks.key_template import content_digest, object_key

    batch = Batch([{"id": "a", "action": "x", "occurred_at": "2024-05-17T13:59:58Z"}])
    options = AzureBlobOptions(container="audit", account_url=AZURE, sas_token=SAS)
    digest = content_digest(batch.jsonl())
    for fmt, name, content_type in (("native", f"a-a-{digest}.jsonl.gz", "application/x-ndjson"),
                                    ("cef", f"a-a-{digest}.cef.log.gz", "text/plain")):
        ctx = SinkContext("z", tmp_path, logging.getLogger("test"), format=fmt)
        sink = AzureBlobSink("z", options, ctx)
        assert object_key(sink.key_template, batch, "z", fmt) == f"audit/2024/05/17/13/{name}"
        assert sink.content_type == content_type
