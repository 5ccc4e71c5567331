"""Stream files: ``<org-slug>.toml`` files in ``streams_dir``, each holding the
``[[sinks]]`` of one organization, scoped to it."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from ..errors import ConfigError
from ..plugin import SinkType
from .collect import convert_all, raise_all
from .env import load_document
from .sinks import SinkConfig, sink_config
from .tables import ORGANIZATION_SLUG_RE, StreamFile

__all__ = ["load_stream_files", "parse_stream_file"]


def load_stream_files(
    directory: str, source: str, taken: set[str], sink_types: dict[str, SinkType], *,
    integrity: bool = False,
) -> tuple[list[SinkConfig], dict[str, ConfigError]]:
    """The sinks of every ``<org>.toml`` in ``directory`` (named by ``streams_dir`` in
    ``source``), and the error of each organization whose file is invalid: that file
    adds no sink. ``taken``: the sink names defined already; ``integrity``: ``source``
    configures [integrity] (a stream's sink may then ask for it)."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError("directory does not exist", file=source, key="streams_dir")
    names = set(taken)
    out: list[SinkConfig] = []
    errors: dict[str, ConfigError] = {}
    for path in sorted(d.glob("*.toml")):
        org = path.stem
        try:
            sinks = parse_stream_file(path, org, sink_types, taken=names,
                                      integrity=integrity, config=source)
        except ConfigError as exc:
            errors[org] = exc
            continue
        except Exception as exc:  # noqa: BLE001 - only this organization's file is affected
            errors[org] = ConfigError(f"cannot be loaded: {type(exc).__name__}: {exc}",
                                      file=str(path))
            continue
        names.update(sc.name for sc in sinks)
        out.extend(sinks)
    return out, errors


def parse_stream_file(
    path: Path, org: str, sink_types: dict[str, SinkType], *,
    taken: Collection[str] = (), integrity: bool = False, config: str = "the daemon's config",
) -> list[SinkConfig]:
    """The sinks of one organization's stream file. Their scope is that organization,
    always: a file cannot widen it. Sink names become ``<org>.<name>``; one already in
    ``taken`` (or given twice in the file) is an error, as is ``integrity = true`` when
    the daemon's config (``config``) has no [integrity] (``integrity`` False), and so is
    ``redaction.allow_looser = true``: a stream file cannot loosen the daemon's redaction
    any more than widen its scope. Errors name the line."""
    source = str(path)
    if not ORGANIZATION_SLUG_RE.match(org):
        raise ConfigError("file name must be <organization-slug>.toml (lowercase letters,"
                          " digits, '-', '_')", file=source)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=source) from None
    data = load_document(text, source)
    errors: list[ConfigError] = []
    stream = convert_all(data, StreamFile, source, "", errors)
    out = []
    for i, table in enumerate(stream.sinks if stream is not None else []):
        scope = table.get("organizations") if isinstance(table, dict) else None
        if scope is not None and scope != [org]:
            errors.append(ConfigError(f"a stream file can only scope its own organization"
                                      f" [{org!r}]", file=source, key=f"sinks[{i}].organizations"))
            continue
        redaction = table.get("redaction") if isinstance(table, dict) else None
        if isinstance(redaction, dict) and redaction.get("allow_looser") is True:
            errors.append(ConfigError("a stream file's sink can only be stricter than the"
                                      " daemon's [redaction]: allow_looser is for the main"
                                      " config", file=source,
                                      key=f"sinks[{i}].redaction.allow_looser"))
            continue
        if isinstance(table, dict):
            table = {**table, "organizations": [org]}
            if isinstance(table.get("name"), str):
                table["name"] = f"{org}.{table['name']}"
        try:
            sc = sink_config(table, i, source, sink_types)
        except ConfigError as exc:
            errors.extend(getattr(exc, "errors", [exc]))
            continue
        where = f"sinks[{i}] ({sc.name})"
        if sc.name in taken or any(o.name == sc.name for o in out):
            errors.append(ConfigError(f"duplicate sink name {sc.name!r}", file=source,
                                      key=f"{where}.name"))
            continue
        if sc.integrity and not integrity:
            errors.append(ConfigError(f"integrity = true needs [integrity] signing_key in"
                                      f" {config}", file=source, key=f"{where}.integrity"))
            continue
        sc.stream_org = org
        sc.source = source
        out.append(sc)
    raise_all(errors, text, source)
    return out
