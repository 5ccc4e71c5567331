"""Loading a config together with the plugins it names (two passes: the config says
which plugin directories to load, the plugins say which sink types exist)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pluggy

from ..config import Config, RedactionConfig, SinkConfig
from ..config.collect import raise_all, with_lines
from ..config.env import load_document
from ..config.loading import collect_config, read_config_text
from ..errors import ConfigError
from ..journal.writer import daemon_journal
from ..plugin import SinkType
from ..plugins.manager import build_plugin_manager, sink_types
from ..scrub import scrub_secrets

if TYPE_CHECKING:
    from ..redaction.redactor import Redactor

__all__ = ["build_redactors", "config_signature", "load_runtime", "notify_config_loaded",
           "record_reload",
           "require_same_state_dir",
           "sink_fingerprint"]


def load_runtime(path: str | Path | None) -> tuple[Config, pluggy.PluginManager, dict[str, SinkType]]:
    """Validate the whole config (sink-specific keys included) and return it with the
    plugin manager and sink types. Raises ConfigError naming file and key; with more
    than one problem, :class:`~auditshipd.errors.ConfigErrors` listing them all."""
    text, source = read_config_text(path)
    try:
        pm = build_plugin_manager(_plugin_dirs(text, source), source)
        types = sink_types(pm)
    except ConfigError as exc:
        raise_all([_in_file(e, source) for e in getattr(exc, "errors", [exc])], text, source)
        raise
    errors: list[ConfigError] = []
    config = collect_config(text, source, types, errors)
    for check in (build_redactors, _metrics_config, _portal_config):
        try:
            check(config)
        except ConfigError as exc:
            errors.extend(getattr(exc, "errors", [exc]))
    raise_all(errors, text, source)
    return config, pm, types


def require_same_state_dir(new: Config, running: Config) -> None:
    """A reload cannot move the state directory (cursors, dead letters and the lock that
    keeps a second daemon out live there): a ConfigError (with the line of
    ``state_dir`` in ``new``'s file) when ``new`` moves it. The rest of ``[journal]``
    takes effect on a reload."""
    if new.state_dir.absolute() == running.state_dir.absolute():
        return
    text = None
    try:
        text, _ = read_config_text(new.source)
    except ConfigError:
        pass
    raise_all([ConfigError("moving journal.state_dir needs a restart (the running daemon"
                           " keeps its cursors, dead letters and lock where they are until"
                           " then)", file=new.source, key="journal.state_dir")],
              text, new.source)


def record_reload(config: Config, added: list[str], removed: list[str],
                  changed: list[str], journal_changed: bool = False) -> None:
    """The reload itself is an audit event (sink names only, never settings; whether
    ``[journal]`` changed)."""
    journal = daemon_journal(config.journal.path)
    metadata: dict[str, Any] = {"added": added, "removed": removed, "changed": changed,
                                "source": os.path.basename(str(config.source))}
    if journal_changed:
        metadata["journal_changed"] = True
    journal.record("log_stream.updated", actor={"type": "system", "name": "auditshipd"},
                   metadata=metadata)
    journal.close()


def _in_file(exc: ConfigError, source: str) -> ConfigError:
    if exc.file:
        return exc
    return ConfigError(exc.reason, file=source, key=exc.key, line=exc.line)


def _plugin_dirs(text: str, source: str) -> list[str]:
    """The plugin directories a config names (which decide the sink types its sinks
    are checked against); an invalid value is reported with the rest of the config."""
    dirs = load_document(text, source, []).get("plugin_dirs", [])
    if isinstance(dirs, list) and all(isinstance(d, str) for d in dirs):
        return dirs
    return []


def _metrics_config(config: Config) -> None:
    """[metrics] and [portal] are checked with the rest, so that check-config and a
    reload reject them up front instead of failing half-way through."""
    from .metrics import metrics_config

    metrics_config(config)


def _portal_config(config: Config) -> None:
    from ..portal.config import portal_config

    portal_config(config)


def build_redactors(config: Config) -> dict[str, Redactor]:
    """One redactor per sink: the root policy, or the sink's (stricter) override.

    Fails closed: if redaction cannot be imported or a policy cannot be compiled, this
    raises ConfigError and no sink is started (or, on a reload, the running config with
    its redactors stays). An event never leaves unredacted.
    """
    try:
        from ..redaction.redactor import compile_policy
    except Exception as exc:
        raise ConfigError(
            f"redaction is unavailable ({type(exc).__name__}: {exc}); events are never"
            " shipped unredacted, so no sink can start: reinstall auditshipd",
            file=config.source, key="redaction",
        ) from exc
    errors: list[ConfigError] = []
    root = _compile(compile_policy, config, config.redaction, None, "redaction", errors)
    out: dict[str, Redactor] = {}
    # Sinks with equal override tables share one redactor: the shared pass redacts a line
    # once per distinct redactor object. Only within this load: a reload compiles afresh
    # (its root policy may differ).
    compiled: dict[bytes, Redactor] = {}
    rejected: set[str] = set()  # stream files (their paths) this policy check rejects
    # With an invalid root policy, the sinks' overrides are not checked against it (they
    # may only be stricter than a policy that is not known yet).
    for i, s in enumerate(config.sinks if root is not None else ()):
        if s.redaction is not None:
            key = _policy_key(s.redaction)
            mine: list[ConfigError] = []
            redactor = compiled.get(key) or _compile(
                compile_policy, config, s.redaction, root, f"sinks[{i}] ({s.name})", mine,
                may_loosen=s.stream_org is None)
            if mine and s.stream_org is not None:  # that organization's file only
                rejected.add(_reject_stream_file(config, s, mine))
            else:
                errors += mine
            if redactor is not None:
                out[s.name] = compiled.setdefault(key, redactor)
        else:
            out[s.name] = root
    raise_all(errors, None, config.source)
    gone = {s.name for s in config.sinks if s.stream_org is not None and s.source in rejected}
    config.sinks[:] = [s for s in config.sinks if s.name not in gone]
    return {name: r for name, r in out.items() if name not in gone}


def _reject_stream_file(config: Config, sink: SinkConfig, errors: list[ConfigError]) -> str:
    """A stream file's sink whose redaction is looser than the daemon's (or invalid)
    rejects that file only, as any invalid stream file does: the error names the file,
    line and key; the organization's other sinks of that file do not run either.
    Returns the file's path."""
    assert sink.stream_org is not None
    index = [s.name for s in config.sinks if s.source == sink.source].index(sink.name)
    try:
        text: str | None = Path(sink.source).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        text = None
    found = [ConfigError(e.reason, file=sink.source,
                         key=f"sinks[{index}].redaction" + (e.key or "").partition(".redaction")[2])
             for e in errors]
    if sink.stream_org not in config.stream_errors:
        config.stream_errors[sink.stream_org] = with_lines(found, text, sink.source)[0]
    return sink.source


def _policy_key(raw: RedactionConfig) -> bytes:
    """An override table, normalized (keys sorted), with the value of the environment
    variable its hash key is read from: equal keys compile to the same policy."""
    table = raw.table()
    env = os.environ.get(raw.hash_key_env) if raw.hash_key_env else None
    return msgspec.json.encode([table, env], order="sorted")


_POLICY_KEY_RE = re.compile(r"^redaction\.([a-z_]+)")


def _compile(compile_policy: Any, config: Config, raw: RedactionConfig | None,
             base: Redactor | None, where: str, errors: list[ConfigError],
             may_loosen: bool = True) -> Redactor | None:
    """The policy ``raw`` compiled; None when it has problems, each appended to
    ``errors`` (a key at fault is left out and the rest compiled again, so that all of
    them are found)."""
    for _ in range(len(RedactionConfig.__struct_fields__) + 1):
        try:
            redactor = compile_policy(raw, source=config.source, base=base,
                                      may_loosen=may_loosen)
        except ConfigError as exc:
            if base is None:
                errors.append(exc if exc.file else ConfigError(
                    exc.reason, file=config.source, key=exc.key))
            else:
                key = f"{where}.{exc.key}" if exc.key else where
                errors.append(ConfigError(exc.reason, file=config.source, key=key))
            m = _POLICY_KEY_RE.match(exc.key or "")
            field = m.group(1) if m else None
            if raw is None or field not in raw.__struct_fields__ or getattr(raw, field) is None:
                return None
            raw = msgspec.structs.replace(raw, **{field: None})
            continue
        except Exception as exc:  # a bug or a broken install: still never ship unredacted
            errors.append(ConfigError(f"the redaction policy could not be compiled: "
                                      f"{type(exc).__name__}: {exc}", file=config.source,
                                      key=where if base is not None else "redaction"))
            return None
        if redactor is None:
            errors.append(ConfigError("the redaction policy compiled to nothing",
                                      file=config.source, key=where))
        return None if errors and base is None else redactor
    return None


def config_signature(path: str | Path | None, streams_dir: str | None) -> tuple[Any, ...]:
    """(name, mtime, size) of the config file and the stream files: what a reload read,
    to tell when one changed."""
    if path is None:
        return ()
    paths = [Path(str(path))]
    if streams_dir:
        paths += sorted(Path(streams_dir).glob("*.toml"))
    sig = []
    for p in paths:
        try:
            st = p.stat()
            sig.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append((str(p), None, None))
    return tuple(sig)


def sink_fingerprint(sc: SinkConfig, config: Config) -> Any:
    """What a running sink was built from: its own table, and what it takes from the
    config's shared tables (a stream's destination policy, [portal] for the portal sink,
    [formats] for a formatted one, [integrity] for a sealed one, ``journal.path`` where
    its own audit events go). A reload restarts the sinks whose fingerprint changed."""
    integrity = config.integrity if sc.integrity else None
    return (sc.type, repr(sorted(sc.raw.items())), sc.stream_org, sc.destinations,
            config.journal.path,  # its context's journal_path (the sink's audit events)
            config.portal if sc.type == "portal" else None,
            config.formats if sc.format != "native" else None,
            (integrity.key.key_id, integrity.digest_interval, integrity.digest_events)
            if integrity is not None else None)


def notify_config_loaded(pm: pluggy.PluginManager, config: Config) -> None:
    """Call the plugins' ``config_loaded`` hook with a config the daemon runs on (at start,
    or a reload already applied): a plugin that raises is logged, never allowed to stop
    the daemon or leave a reload half done."""
    try:
        pm.hook.config_loaded(config=config)
    except Exception as exc:  # noqa: BLE001 - a notification; the daemon goes on
        logging.getLogger("auditshipd").error(
            "plugin hook config_loaded failed (the daemon goes on): %s: %s",
            type(exc).__name__, scrub_secrets(str(exc)))
