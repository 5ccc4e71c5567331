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

from ..errors import ConfigError, ConfigErrors
from ..plugin import SinkType
from ..sinks import BUILTIN_SINK_MODULES
from . import hookspecs

__all__ = ["ENTRY_POINT_GROUP", "build_plugin_manager", "sink_types"]

ENTRY_POINT_GROUP = "auditshipd"
DISABLE_AUTOLOAD_ENV = "AUDITSHIPD_DISABLE_PLUGIN_AUTOLOAD"


def build_plugin_manager(plugin_dirs: Iterable[str | Path] = (),
                         source: str | None = None) -> pluggy.PluginManager:
    """A fresh manager with the built-ins, entry-point plugins and drop-in files.

    A plugin directory that is missing, a drop-in file that fails to import or that
    pluggy refuses (a hook name misspelt, a hook's arguments wrong), two drop-in files
    of the same name in different directories (each is the module of its file name) is
    a :class:`~auditshipd.errors.ConfigError` on ``plugin_dirs`` of ``source`` (the
    config naming the directories); every such problem is raised at once. A directory
    named twice is read once."""
    pm = pluggy.PluginManager("auditshipd")
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_SINK_MODULES:
        pm.register(importlib.import_module(modname), name=modname)
    if not os.environ.get(DISABLE_AUTOLOAD_ENV):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    errors: list[ConfigError] = []
    loaded: dict[str, Path] = {}  # module name -> the drop-in file it was loaded from
    for directory in plugin_dirs:
        errors += _load_plugin_dir(pm, Path(directory), source, loaded)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        errors.append(ConfigError(f"plugin {_plugin_file(exc.plugin)} was refused: {exc}",
                                  file=source, key="plugin_dirs"))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)
    return pm


def _plugin_file(plugin: object) -> str:
    return str(getattr(plugin, "__file__", None) or getattr(plugin, "__name__", plugin))


def _load_plugin_dir(pm: pluggy.PluginManager, directory: Path, source: str | None,
                     loaded: dict[str, Path]) -> list[ConfigError]:
    """Register the drop-in files of ``directory`` (``loaded``: the files registered
    before, by module name); the problems found."""
    if not directory.is_dir():
        return [ConfigError(f"plugin directory {str(directory)!r} does not exist",
                            file=source, key="plugin_dirs")]
    errors = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        modname = f"auditshipd_plugin_{path.stem}"
        if modname in loaded:
            if not _same_file(loaded[modname], path):
                errors.append(ConfigError(
                    f"plugin files {loaded[modname]} and {path} have the same name: rename"
                    " one (a drop-in file is loaded as the module of its file name)",
                    file=source, key="plugin_dirs"))
            continue
        loaded[modname] = path
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            errors.append(ConfigError(f"cannot load plugin file {path}", file=source,
                                      key="plugin_dirs"))
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[modname]
            errors.append(ConfigError(
                f"plugin file {path} failed to import: {type(exc).__name__}: {exc}",
                file=source, key="plugin_dirs"))
            continue
        try:
            pm.register(module, name=modname)
        except (pluggy.PluginValidationError, ValueError) as exc:
            errors.append(ConfigError(f"plugin file {path} was refused: {exc}",
                                      file=source, key="plugin_dirs"))
    return errors


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def sink_types(pm: pluggy.PluginManager) -> dict[str, SinkType]:
    """All sink types, by name. Two plugins offering the same name is an error."""
    found: dict[str, SinkType] = {}
    for impl in pm.hook.register_sink_types.get_hookimpls():
        try:
            offered = list(impl.function() or ())
        except Exception as exc:  # a plugin's bug: a config error naming it, not a crash
            raise ConfigError(f"plugin {impl.plugin_name} failed in register_sink_types:"
                              f" {type(exc).__name__}: {exc}", key="plugin_dirs") from exc
        for st in offered:
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
