"""The stream form derives from the sink type's option schema: one input per option of the
right kind, and submitted strings converted back to the option's type."""

from __future__ import annotations

import pytest

from auditshipd.plugins.manager import build_plugin_manager, sink_types
from auditshipd.portal.stream_defs import StreamRequestError
from auditshipd.portal.stream_forms import form_fields, options_from_form

TYPES = sink_types(build_plugin_manager([]))


def test_inputs_follow_the_schema() -> None:
    """Secrets are password inputs never filled in; a header table is a text area; a
    boolean and a fixed choice are selects; host options are absent."""
    kinds = {f.name: f for f in form_fields(TYPES["http"], {"url": "https://x.example/in",
                                                            "tls_verify": True},
                                            ["bearer_token"])}
    assert kinds["bearer_token"].kind == "secret" and kinds["bearer_token"].value == ""
    assert kinds["bearer_token"].is_set and not kinds["hmac_secret"].is_set
    assert kinds["headers"].kind == "headers" and kinds["gzip"].kind == "bool"
    assert kinds["tls_verify"].value == "true" and kinds["url"].required
    assert "ca_file" not in kinds
    datadog = {f.name: f for f in form_fields(TYPES["datadog"])}
    assert datadog["oversize"].kind == "choice"
    assert set(datadog["oversize"].choices) == {"truncate", "dead_letter"}
    assert "profile" not in {f.name for f in form_fields(TYPES["s3"])}


def test_submitted_strings_become_options() -> None:
    """Numbers, booleans and header lines are converted; on an edit an emptied input
    removes its option and an empty secret keeps the stored one."""
    form = {"url": " https://x.example/in ", "gzip": "true", "timeout": "2.5", "gzip_level": "",
            "headers": "X-Tenant: acme\n\nX-Env:  prod ", "bearer_token": "", "ca_file": "/etc/x"}
    assert options_from_form(TYPES["http"], form, editing=False) == {
        "url": "https://x.example/in", "gzip": True, "timeout": 2.5,
        "headers": {"X-Tenant": "acme", "X-Env": "prod"}}
    edited = options_from_form(TYPES["http"], form, editing=True)
    assert edited["gzip_level"] is None and "bearer_token" not in edited and "ca_file" not in edited
    with pytest.raises(StreamRequestError) as info:
        options_from_form(TYPES["http"], {"timeout": "soon"}, editing=False)
    assert info.value.param == "options.timeout"
    with pytest.raises(StreamRequestError, match="Name: value"):
        options_from_form(TYPES["http"], {"headers": "no colon here"}, editing=False)
