"""``${ENV}`` references in the configuration: POSIX ``:-`` defaults, and malformed
references reported with their file, line and key (never kept as literal text)."""

from __future__ import annotations

import pytest

from auditshipd.config import parse_config
from auditshipd.config.env import interpolate
from auditshipd.errors import ConfigError


def test_the_default_is_used_when_the_variable_is_set_but_empty(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFGENV_LISTEN", "")
    assert interpolate("${CFGENV_LISTEN:-127.0.0.1:9750}", "f", "k") == "127.0.0.1:9750"
    assert interpolate("${CFGENV_LISTEN}", "f", "k") == ""
    monkeypatch.setenv("CFGENV_LISTEN", "0.0.0.0:9750")
    assert interpolate("${CFGENV_LISTEN:-127.0.0.1:9750}", "f", "k") == "0.0.0.0:9750"
    assert interpolate("$${CFGENV_LISTEN} ${CFGENV_LISTEN}", "f", "k") == \
        "${CFGENV_LISTEN} 0.0.0.0:9750"


@pytest.mark.parametrize("reference", ["${SIEM-TOKEN}", "${NOPE:-${SIEM_TOKEN}}", "${", "a ${}"])
def test_a_malformed_reference_is_an_error(reference: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIEM_TOKEN", "real-token-value")
    with pytest.raises(ConfigError, match="malformed"):
        interpolate(reference, "f", "k")


def test_a_malformed_reference_names_file_line_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIEM_TOKEN", "real-token-value")
    text = ('[metrics]\nlisten = "127.0.0.1:9750"\n\n[[sinks]]\nname = "siem"\ntype = "http"\n'
            'url = "https://siem.example.com/in"\nbearer_token = "${SIEM-TOKEN}"\n')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "auditshipd.toml")
    assert str(caught.value).startswith(
        "auditshipd.toml:8: sinks[0] (siem).bearer_token: malformed ${...} reference")
