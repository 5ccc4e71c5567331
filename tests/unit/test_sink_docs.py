"""Every built-in sink type has its example table in config/sinks-example.toml and its
section in docs/sinks.md, each naming every option; the example file passes check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auditshipd.plugins.manager import build_plugin_manager, sink_types

ROOT = Path(__file__).resolve().parents[2]
TYPES = sorted(sink_types(build_plugin_manager()).items())


@pytest.mark.parametrize(("name", "sink_type"), TYPES, ids=[n for n, _ in TYPES])
def test_every_sink_type_is_in_the_example_and_the_docs(name, sink_type) -> None:
    example = (ROOT / "config" / "sinks-example.toml").read_text("utf-8")
    tables = [t for t in example.split("[[sinks]]") if f'\ntype = "{name}"' in t]
    assert tables, f"no example table of type {name}"
    docs = (ROOT / "docs" / "sinks.md").read_text("utf-8")
    assert f"\n## `{name}`" in docs, f"no section for {name} in docs/sinks.md"
    section = docs.split(f"\n## `{name}`")[1].split("\n## ")[0]
    for key in getattr(sink_type.options, "__struct_fields__", ()):
        assert f"\n{key} = " in tables[0] or f"\n# {key} = " in tables[0], (name, key)
        assert f"| `{key}` |" in section, (name, key)


def test_the_example_file_passes_check_config_without_its_secrets() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "auditshipd.cli", "check-config", "--no-env", "-c",
         str(ROOT / "config" / "sinks-example.toml")],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"OK ({len(TYPES)} sink(s)" in done.stdout
