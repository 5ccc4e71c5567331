"""Every configuration key is documented: the top level, [journal], [metrics] and
[integrity] in docs/configuration.md, [portal] in one of the docs; the env file's mode is
the same wherever it is given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auditshipd.config.tables import (
    ConfigFile,
    IntegrityConfig,
    JournalConfig,
    MetricsConfig,
    PortalConfig,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGURATION = (REPO / "docs" / "configuration.md").read_text()
ALL_DOCS = "\n".join(p.read_text() for p in (REPO / "docs").glob("*.md"))


def _keys(table: type) -> list[str]:
    return list(table.__struct_fields__)


@pytest.mark.parametrize("key", [k for k in _keys(ConfigFile)
                                 if k not in ("journal", "redaction", "portal", "metrics",
                                              "formats", "integrity", "sinks")]
                         + [f"journal.{k}" for k in _keys(JournalConfig)]
                         + [f"metrics.{k}" for k in _keys(MetricsConfig)]
                         + [f"integrity.{k}" for k in _keys(IntegrityConfig)])
def test_configuration_md_shows_every_key(key: str) -> None:
    table, _, name = key.rpartition(".")
    text = CONFIGURATION
    if table:
        start = text.index(f"\n[{table}]")
        text = text[start:text.index("\n[", start + 1)]
    assert re.search(rf"^{re.escape(name)} = ", text, re.M), f"{key} is not in configuration.md"


@pytest.mark.parametrize("key", _keys(PortalConfig))
def test_every_portal_key_is_documented(key: str) -> None:
    assert re.search(rf"^{re.escape(key)} +=", ALL_DOCS, re.M), f"portal.{key} is undocumented"


def test_the_env_file_mode_agrees_in_the_starter_config_readme_and_init() -> None:
    starter = (REPO / "src" / "auditshipd" / "starter" / "auditshipd.toml").read_text()
    readme = (REPO / "README.md").read_text()
    scaffold = (REPO / "src" / "auditshipd" / "service" / "scaffold.py").read_text()
    for text in (starter, readme, scaffold):
        assert re.search(r"/etc/auditshipd/env[^\n]*\n?[^\n]*mode 0600", text)
        assert not re.search(r"/etc/auditshipd/env[^\n]*\n?[^\n]*mode 06[4-7]0", text)
