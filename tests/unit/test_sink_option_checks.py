"""Sink options that could never work are refused when the configuration is loaded
(check-config, a stream's validation), with an error naming the key: URLs whose host or
port does not parse, header text with control characters, timeouts that are NaN or
infinite, CA files that do not exist, S3 bucket and region names S3 refuses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from auditshipd.errors import ConfigError, PermanentError
from auditshipd.service.loading import load_runtime

BASES = {
    "http": 'type = "http"\nurl = "https://rx.example.com/in"\n',
    "otlp": 'type = "otlp"\nurl = "https://collector.example.com:4318"\n',
    "splunk_hec": 'type = "splunk_hec"\nurl = "https://splunk.example.com:8088"\n'
                  'token = "0b4f1c2a-1111-2222-3333-444455556666"\n',
    "datadog": 'type = "datadog"\napi_key = "0123456789abcdef0123456789abcdef"\n',
    "s3": 'type = "s3"\nbucket = "audit-logs"\n',
    "gcs": 'type = "gcs"\nbucket = "audit-logs"\n',
    "azure_blob": 'type = "azure_blob"\ncontainer = "audit"\n'
                  'account_url = "https://acme.blob.core.windows.net"\n'
                  'sas_token = "sv=2022-11-02&sig=abc"\n',
    "mqtt": 'type = "mqtt"\nurl = "mqtts://broker.example.com:8883"\n',
    "nats": 'type = "nats"\nurl = "tls://nats.example.com:4222"\n',
}


def load(tmp_path: Path, table: str) -> None:
    path = tmp_path / "auditshipd.toml"
    path.write_text(textwrap.dedent(f"""
        [journal]
        path = "{tmp_path}/audit.jsonl"
        state_dir = "{tmp_path}/state"
        [[sinks]]
        name = "s"
    """) + table)
    load_runtime(path)


def refused(tmp_path: Path, table: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, table)
    return info.value


@pytest.mark.parametrize("sink", sorted(BASES))
def test_the_base_tables_load(tmp_path: Path, sink: str) -> None:
    load(tmp_path, BASES[sink])


FLOAT_KEYS = [(sink, "timeout") for sink in sorted(BASES)] + [
    ("splunk_hec", "ack_timeout"), ("splunk_hec", "ack_poll_interval")]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0.0", "-1.0"])
@pytest.mark.parametrize(("sink", "key"), FLOAT_KEYS)
def test_float_options_must_be_finite_and_positive(tmp_path: Path, sink: str, key: str,
                                                    value: str) -> None:
    err = refused(tmp_path, BASES[sink] + f"{key} = {value}\n")
    assert err.key == f"sinks[0] (s).{key}"


@pytest.mark.parametrize(("sink", "url"), [
    ("http", "http://xn--/"),
    ("http", "https://xn--a.example/"),
    ("otlp", "http://xn--/v1/logs"),
    ("splunk_hec", "https://xn--:8088"),
    ("datadog", "https://xn--/api/v2/logs"),
])
def test_a_malformed_idna_host_is_not_a_valid_url(tmp_path: Path, sink: str, url: str) -> None:
    table = "\n".join(line for line in BASES[sink].splitlines() if not line.startswith("url ="))
    err = refused(tmp_path, table + f'\nurl = "{url}"\n')
    assert err.key == "sinks[0] (s).url" and err.reason == "not a valid URL"


@pytest.mark.parametrize(("sink", "key", "url"), [
    ("mqtt", "url", "mqtt://[fd00::10:1883"),
    ("nats", "url", "nats://[fd00::10:4222"),
    ("s3", "endpoint_url", "http://[fd00::10:9000"),
    ("gcs", "endpoint_url", "http://[fd00::10:9023"),
    ("azure_blob", "account_url", "https://[fd00::10/"),
    ("mqtt", "url", "mqtt://broker:99999"),
])
def test_a_url_that_does_not_split_is_refused(tmp_path: Path, sink: str, key: str,
                                              url: str) -> None:
    lines = [line for line in BASES[sink].splitlines() if not line.startswith(f"{key} =")]
    err = refused(tmp_path, "\n".join(lines) + f'\n{key} = "{url}"\n')
    assert err.key == f"sinks[0] (s).{key}"
    assert err.reason.startswith("not a valid URL")


@pytest.mark.parametrize(("sink", "line", "key"), [
    ("http", 'headers = { "X-Tenant" = "Zq9value\\r\\nX-Evil: 1" }', "headers"),
    ("http", 'headers = { "X-Tenant\\r\\nX-Evil" = "acme" }', "headers"),
    ("http", 'headers = { "X Tenant" = "acme" }', "headers"),
    ("http", 'bearer_token = "Zq9value\\nX-Evil: 1"', "bearer_token"),
    ("http", 'bearer_token = "Zq9value\\u0000"', "bearer_token"),
    ("otlp", 'headers = { "Authorization" = "Bearer Zq9value\\r\\n" }', "headers"),
    ("splunk_hec", 'token = "Zq9value\\u0000"', "token"),
    ("datadog", 'api_key = "Zq9value\\u0007"', "api_key"),
])
def test_control_characters_in_header_text_are_refused(tmp_path: Path, sink: str, line: str,
                                                       key: str) -> None:
    base = "\n".join(x for x in BASES[sink].splitlines() if not x.startswith(f"{key} ="))
    err = refused(tmp_path, base + "\n" + line + "\n")
    assert err.key == f"sinks[0] (s).{key}"
    assert "Zq9value" not in str(err)  # a value may be a secret: never shown


def test_a_header_value_with_a_tab_is_kept(tmp_path: Path) -> None:
    load(tmp_path, BASES["http"] + 'headers = { "X-Tenant" = "acme\\tblue" }\n')


@pytest.mark.parametrize("sink", ["http", "otlp"])
def test_a_ca_file_that_does_not_exist_is_refused(tmp_path: Path, sink: str) -> None:
    err = refused(tmp_path, BASES[sink] + f'ca_file = "{tmp_path}/missing-ca.pem"\n')
    assert err.key == "sinks[0] (s).ca_file" and "not found" in err.reason


@pytest.mark.parametrize("bucket", ["audit/logs", "audit logs", "", "a" * 256, "audit:logs"])
def test_s3_bucket_names_s3_refuses(tmp_path: Path, bucket: str) -> None:
    err = refused(tmp_path, BASES["s3"].replace('"audit-logs"', f'"{bucket}"'))
    assert err.key == "sinks[0] (s).bucket"


@pytest.mark.parametrize("bucket", ["Legacy_Bucket.2019",
                                    "arn:aws:s3:eu-west-1:123456789012:accesspoint/audit"])
def test_s3_bucket_names_botocore_takes_are_kept(tmp_path: Path, bucket: str) -> None:
    load(tmp_path, BASES["s3"].replace('"audit-logs"', f'"{bucket}"'))


@pytest.mark.parametrize("region", ["eu west 1", "", "-eu", "eu-west-1/x", "123"])
def test_s3_region_must_be_a_region_name(tmp_path: Path, region: str) -> None:
    err = refused(tmp_path, BASES["s3"] + f'region = "{region}"\n')
    assert err.key == "sinks[0] (s).region"


def test_s3_a_request_botocore_will_not_build_is_permanent() -> None:
    """ParamValidationError / InvalidRegionError at send time: retrying cannot help."""
    from botocore.exceptions import InvalidRegionError, ParamValidationError

    from auditshipd.sinks.s3 import classify_s3_error

    assert isinstance(classify_s3_error(ParamValidationError(report="bad bucket")),
                      PermanentError)
    assert isinstance(classify_s3_error(InvalidRegionError(region_name="eu west")),
                      PermanentError)
