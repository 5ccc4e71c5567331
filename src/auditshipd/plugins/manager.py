"""The plugin manager factory: built-ins, entry points, then drop-in ``*.py`` files.

Set ``AUDITSHIPD_DISABLE_PLUGIN_AUTOLOAD=1`` to skip entry-point plugins (drop-in
directories named in the config are still loaded: they were asked for explicitly).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pluggy

from ..errors import ConfigError
from ..plugin import SinkType
from ..sinks import BUILTIN_SINK_MODULES
from . import hookspecs

__all__ = ["ENTRY_POINT_GROUP", "build_plugin_manager", "sink_types"]

ENTRY_POINT_GROUP = "auditshipd"
DISABLE_AUTOLOAD_ENV = "AUDITSHIPD_DISABLE_PLUGIN_AUTOLOAD"


def build_plugin_manager(plugin_dirs: Iterable[str | Path] = ()) -> pluggy.PluginManager:
    """A fresh manager with the built-ins, entry-point plugins and drop-in files."""
    pm = pluggy.PluginManager("auditshipd")
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_SINK_MODULES:
        pm.register(importlib.import_module(modname), name=modname)
    if not os.environ.get(DISABLE_AUTOLOAD_ENV):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for directory in plugin_dirs:
        _load_plugin_dir(pm, Path(directory))
    pm.check_pending()
    return pm


def _load_plugin_dir(pm: pluggy.PluginManager, directory: Path) -> None:
    if not directory.is_dir():
        raise ConfigError(f"plugin directory {str(directory)!r} does not exist", key="plugin_dirs")
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        modname = f"auditshipd_plugin_{path.stem}"
        if pm.has_plugin(modname):
            continue
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load plugin file {path}", key="plugin_dirs")
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[modname]
            raise ConfigError(
                f"plugin file {path} failed to import: {type(exc).__name__}: {exc}",
                key="plugin_dirs",
            ) from exc
        pm.register(module, name=modname)


def sink_types(pm: pluggy.PluginManager) -> dict[str, SinkType]:
    """All sink types, by name. Two plugins offering the same name is an error."""
    found: dict[str, SinkType] = {}
    for impl in pm.hook.register_sink_types.get_hookimpls():
        for st in impl.function() or ():
            if not isinstance(st, SinkType):
                raise ConfigError(
                    f"plugin {impl.plugin_name} returned {st!r} from register_sink_types,"
                    " expected SinkType instances"
                )
            if st.name in found:
                raise ConfigError(
                    f"sink type {st.name!r} is provided by both {found[st.name].plugin}"
                    f" and {impl.plugin_name}"
                )
            # Every field kept (check_connection, batch_defaults, concurrency...), the
            # contributing plugin's name added.
            found[st.name] = dataclasses.replace(st, plugin=impl.plugin_name)
    return found
