"""Unit tests of the nats sink: options, subject templates, error classification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditshipd.config import parse_config
from auditshipd.errors import ConfigError, PermanentError, RetryableError
from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.sinks.nats import (
    NatsOptions,
    SubjectTemplate,
    classify_nats_error,
    validate_options,
)


def config_error(**options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        validate_options(NatsOptions(**{"url": "nats://server", **options}))
    return err.value


def test_valid_options_pass(tmp_path: Path) -> None:
    """Typical option sets validate, one URL or a list of them."""
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    creds = tmp_path / "user.creds"
    creds.write_text("")
    validate_options(NatsOptions(url="nats://server:4222"))
    validate_options(NatsOptions(
        url=["tls://a:4222", "tls://b:4222"], subject="audit.{organization.slug}",
        stream="AUDIT", credentials_file=str(creds), ca_file=str(ca), max_in_flight=10,
    ))
    validate_options(NatsOptions(url="nats://s", user="u", password="p"))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "http://server:4222"}, "url"),
        ({"url": "nats://"}, "url"),
        ({"url": []}, "url"),
        ({"url": "nats://server:99999"}, "url"),
        ({"url": "nats://u:p@server"}, "url"),
        ({"subject": "audit.*.{action}"}, "subject"),
        ({"subject": "audit.>"}, "subject"),
        ({"subject": "audit..{action}"}, "subject"),
        ({"subject": "audit.{action}."}, "subject"),
        ({"subject": ""}, "subject"),
        ({"subject": "audit {action}"}, "subject"),
        ({"subject": "audit.{}"}, "subject"),
        ({"subject": "audit.{action!r}"}, "subject"),
        ({"stream": "a.b"}, "stream"),
        ({"password": "p"}, "user"),
        ({"user": "u", "token": "t"}, "token"),
        ({"credentials_file": "/nonexistent.creds"}, "credentials_file"),
        ({"nkey_seed_file": "/nonexistent.nk"}, "nkey_seed_file"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_invalid_options_name_their_key(options: dict[str, Any], key: str) -> None:
    """Each mistake is reported with the key to fix."""
    assert config_error(**options).key == key


def test_registered_with_secrets_and_config_errors_name_the_sink() -> None:
    """The nats type is built in, masks password and token, and config errors say where."""
    types = sink_types(build_plugin_manager())
    assert types["nats"].secrets == ("password", "token")
    text = '[[sinks]]\nname = "bus"\ntype = "nats"\nurl = "nats://s"\nmax_in_flight = "x"\n'
    with pytest.raises(ConfigError, match=r"c\.toml:5: sinks\[0\] \(bus\)\.max_in_flight"):
        parse_config(text, "c.toml", types)


def test_subject_values_are_one_token_without_wildcards() -> None:
    """A value can add no token and no wildcard; missing or non-scalar values are 'unknown'."""
    t = SubjectTemplate("audit.{organization.slug}.{action}")
    assert t({"organization": {"slug": "acme"}, "action": "user.login"}) == "audit.acme.user_login"
    assert t({"organization": {"slug": "a*b>c d"}, "action": ""}) == "audit.a_b_c_d.unknown"
    assert t({"organization": "flat"}) == "audit.unknown.unknown"
    assert SubjectTemplate("n.{a}.{b}")({"a": 3, "b": True}) == "n.3.true"


def test_classification() -> None:
    """Missing stream, timeouts, lost connections retry; auth, payload size and a wrong
    expected stream are permanent."""
    import nats.errors
    import nats.js.errors

    retry = [
        nats.js.errors.NoStreamResponseError(),
        nats.errors.TimeoutError(),
        nats.errors.ConnectionClosedError(),
        nats.errors.UnexpectedEOF(),
        OSError("connection refused"),
        nats.js.errors.ServiceUnavailableError(code=503),
        nats.js.errors.APIError(code=400, err_code=10077, description="maximum messages exceeded"),
    ]
    permanent = [
        nats.errors.AuthorizationError(),
        nats.errors.Error("nats: 'Authorization Violation'"),
        nats.errors.MaxPayloadError(),
        nats.js.errors.BadRequestError(code=400, err_code=10060, description="expected stream"),
    ]
    for exc in retry:
        assert isinstance(classify_nats_error(exc), RetryableError), exc
    for exc in permanent:
        assert isinstance(classify_nats_error(exc), PermanentError), exc
