"""The plugin system: hooks documented, built-ins registered like third-party plugins."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from auditshipd.errors import ConfigError
from auditshipd.plugins import hookspecs
from auditshipd.plugins.manager import build_plugin_manager, sink_types

REPO = Path(__file__).resolve().parents[2]


def hook_functions():
    return [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(f, "auditshipd_spec")]


def test_every_hook_is_documented_with_an_example():
    """Each hookspec has a docstring with an example (datasette's test_docs rule)."""
    hooks = hook_functions()
    assert {h.__name__ for h in hooks} >= {"register_sink_types", "startup", "shutdown",
                                          "batch_delivered", "batch_dead_lettered",
                                          "event_quarantined", "config_loaded"}
    for h in hooks:
        doc = inspect.getdoc(h) or ""
        assert len(doc) > 40, f"hook {h.__name__} is undocumented"
        assert "Example" in doc and "@hookimpl" in doc, f"hook {h.__name__} has no example"


def test_builtin_sinks_are_plugins():
    """Built-in sink types come through register_sink_types like any plugin."""
    pm = build_plugin_manager()
    types = sink_types(pm)
    assert {"file", "stdout", "http", "splunk_hec", "datadog", "s3", "mqtt", "portal"} <= set(types)
    assert types["http"].plugin == "auditshipd.sinks.http"


def test_drop_in_directory_plugin(tmp_path):
    """A .py file in a plugin dir adds its sink type."""
    pm = build_plugin_manager([REPO / "plugins"])
    assert "jsonl_dir" in sink_types(pm)


def test_misspelled_hook_fails_loudly(tmp_path):
    """A hookimpl with a name that is not a hook is an error (check_pending)."""
    (tmp_path / "bad.py").write_text(
        "from auditshipd import hookimpl\n\n@hookimpl\ndef register_sink_type():\n    return []\n")
    with pytest.raises(ConfigError, match="bad.py was refused: unknown hook 'register_sink_type'"
                       ) as caught:
        build_plugin_manager([tmp_path], "auditshipd.toml")
    assert (caught.value.file, caught.value.key) == ("auditshipd.toml", "plugin_dirs")


def test_a_failing_register_sink_types_is_a_config_error_naming_the_plugin(tmp_path):
    (tmp_path / "raising.py").write_text(
        "from auditshipd import hookimpl\n\n@hookimpl\ndef register_sink_types():\n"
        "    raise RuntimeError('no backend')\n")
    with pytest.raises(ConfigError, match="auditshipd_plugin_raising failed in"
                       " register_sink_types: RuntimeError: no backend"):
        sink_types(build_plugin_manager([tmp_path]))


def test_plugin_files_of_the_same_name_in_two_directories_are_an_error(tmp_path):
    """A drop-in file is the module of its name: a second one of that name elsewhere is
    a config error naming both (it was skipped without a word); a directory named twice
    is read once."""
    first, second = tmp_path / "a", tmp_path / "b"
    for directory, sink_type in ((first, "alpha"), (second, "beta")):
        directory.mkdir()
        (directory / "ver.py").write_text(
            "from auditshipd import hookimpl\nfrom auditshipd.plugin import SinkType, EmptyOptions\n"
            "@hookimpl\ndef register_sink_types():\n"
            f"    return [SinkType('{sink_type}', EmptyOptions, object)]\n")
    with pytest.raises(ConfigError, match="plugin files .*a/ver.py and .*b/ver.py have the"
                       " same name") as caught:
        build_plugin_manager([first, second], "auditshipd.toml")
    assert (caught.value.file, caught.value.key) == ("auditshipd.toml", "plugin_dirs")
    pm = build_plugin_manager([first, tmp_path / "." / "a"])
    assert "alpha" in sink_types(pm)


def test_plugin_import_error_names_the_file(tmp_path):
    """A drop-in file that fails to import is a config error naming it."""
    (tmp_path / "broken.py").write_text("import not_a_module_xyz\n")
    with pytest.raises(ConfigError, match="broken.py failed to import"):
        build_plugin_manager([tmp_path])


def test_duplicate_sink_type_is_an_error(tmp_path):
    """Two plugins offering the same sink type name is reported."""
    (tmp_path / "dup.py").write_text(
        "from auditshipd import hookimpl\nfrom auditshipd.plugin import SinkType, EmptyOptions\n"
        "@hookimpl\ndef register_sink_types():\n"
        "    return [SinkType('file', EmptyOptions, object)]\n")
    with pytest.raises(ConfigError, match="'file' is provided by both"):
        sink_types(build_plugin_manager([tmp_path]))


def test_readme_documents_every_sink_option():
    """Every option of every built-in sink type is named in the table of
    docs/configuration.md."""
    import msgspec

    readme = (REPO / "docs" / "configuration.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines()
            if line.startswith("| `")}
    for name, st in sink_types(build_plugin_manager()).items():
        assert name in rows, f"sink type {name} missing from the configuration table"
        for f in msgspec.structs.fields(st.options):
            assert f"`{f.name}`" in rows[name], f"{name}.{f.name} undocumented in docs/configuration.md"


def test_sink_docs_and_example_config_cover_the_siem_sinks():
    """docs/sinks.md and config/sinks-example.toml name every option of the SIEM sinks."""
    import msgspec

    docs = (REPO / "docs" / "sinks.md").read_text()
    example = (REPO / "config" / "sinks-example.toml").read_text()
    types = sink_types(build_plugin_manager())
    for name in ("splunk_hec", "datadog", "s3", "mqtt", "nats", "otlp", "gcs", "azure_blob"):
        assert f'type = "{name}"' in example
        for f in msgspec.structs.fields(types[name].options):
            assert f"`{f.name}`" in docs, f"{name}.{f.name} missing from docs/sinks.md"
            assert f.name in example, f"{name}.{f.name} missing from the example config"
