"""``auditshipd init``: write a starter config, the default redaction policy and a systemd
unit for this install, then print the commands that finish the set-up.

The unit is ``systemd/auditshipd.service`` (shipped with the package) with only the lines
that depend on the install changed: ``ExecStart`` (the ``auditshipd`` of the environment
``init`` runs from), ``User``/``Group`` and the ``ReadWritePaths`` of the chosen
directories. With the default settings the written unit is byte for byte the shipped one,
so the two cannot drift apart (tests check it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ..shipped import shipped_dir, shipped_text

__all__ = ["InitSettings", "add_parser", "installed_executable", "render_config",
           "render_unit", "run", "write_files"]

DEFAULT_EXEC = "/opt/auditshipd/bin/auditshipd"


@dataclass
class InitSettings:
    config_dir: Path = Path("/etc/auditshipd")
    journal_dir: Path = Path("/var/log/audit-journal")
    state_dir: Path = Path("/var/lib/auditshipd")
    logs_dir: Path = Path("/var/log/auditshipd")
    user: str = "auditshipd"
    group: str = "auditshipd"
    executable: str = DEFAULT_EXEC
    portal_listen: str = "127.0.0.1:8750"
    metrics_listen: str = "127.0.0.1:9750"
    warnings: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.config_dir / "auditshipd.toml"


# The directories the unit's StateDirectory=auditshipd / LogsDirectory=auditshipd create.
_UNIT_STATE_DIR = Path("/var/lib/auditshipd")
_UNIT_LOGS_DIR = Path("/var/log/auditshipd")
_HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))


def installed_executable() -> str:
    """The ``auditshipd`` script of the environment running this (a venv, pipx's venv)."""
    # sys.executable is not resolved: a venv's python is a symlink to the system one,
    # and the script sits next to the link.
    candidate = Path(os.path.abspath(sys.executable)).parent / "auditshipd"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    argv0 = Path(sys.argv[0])
    if argv0.name == "auditshipd" and argv0.is_file():
        return str(argv0.absolute())
    return DEFAULT_EXEC


def render_unit(template: str, s: InitSettings) -> str:
    """The shipped unit with the install-specific lines for ``s``."""
    rw = [f"ReadWritePaths=-{s.journal_dir}"]
    # Directories outside those systemd creates must be writable too ("-": may be missing).
    if s.state_dir != _UNIT_STATE_DIR:
        rw.append(f"ReadWritePaths=-{s.state_dir}")
    if s.logs_dir != _UNIT_LOGS_DIR:
        rw.append(f"ReadWritePaths=-{s.logs_dir}")
    protect_home = "yes"
    if any(_is_under(Path(s.executable), root) for root in _HOME_ROOTS):
        # ProtectHome=yes would hide the program itself: the unit could not start.
        protect_home = "read-only"
        s.warnings.append(
            f"{s.executable} is under a home directory, so the unit has ProtectHome=read-only"
            " instead of yes. For the full sandbox install system-wide:"
            " sudo pipx install --global 'auditshipd[s3,mqtt]' (or a venv in /opt/auditshipd)"
            " and run init from there"
        )
    out: list[str] = []
    rw_done = False
    for line in template.splitlines(keepends=True):
        key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else ""
        if key == "ExecStart":
            line = f"ExecStart={s.executable} run -c {s.config_path}\n"
        elif key == "User":
            line = f"User={s.user}\n"
        elif key == "Group":
            line = f"Group={s.group}\n"
        elif key == "ProtectHome":
            line = f"ProtectHome={protect_home}\n"
        elif key == "ReadWritePaths":
            if rw_done:
                continue
            line = "".join(f"{r}\n" for r in rw)
            rw_done = True
        out.append(line)
    return "".join(out)


def render_config(template: str, s: InitSettings) -> str:
    values = {
        "VERSION": __version__,
        "CONFIG": str(s.config_path),
        "CONFIG_DIR": str(s.config_dir),
        "SHARE": str(shipped_dir()),
        "JOURNAL_DIR": str(s.journal_dir),
        "STATE_DIR": str(s.state_dir),
        "LOGS_DIR": str(s.logs_dir),
        "USER": s.user,
        "GROUP": s.group,
        "PORTAL_LISTEN": s.portal_listen,
        "METRICS_LISTEN": s.metrics_listen,
    }
    for name, value in values.items():
        # Paths go into TOML basic strings: backslashes and quotes would break them.
        if any(c in value for c in '"\\\n'):
            raise ValueError(f"{name.lower()} {value!r}: quotes, backslashes and newlines"
                             " are not supported")
        template = template.replace(f"@{name}@", value)
    return template


def starter_config_template() -> str:
    return resources.files("auditshipd").joinpath("starter/auditshipd.toml").read_text("utf-8")


def write_files(s: InitSettings, *, force: bool = False) -> list[tuple[Path, str]]:
    """Write the three files; returns (path, what it is). Refuses to overwrite unless
    ``force``, naming every file that exists."""
    redaction = shipped_text("config/redaction.toml")
    files = [
        (s.config_path, render_config(starter_config_template(), s), 0o640,
         "starter config (journal, redaction, portal, sinks)"),
        (s.config_dir / "redaction-default.toml", redaction, 0o644,
         "the default redaction policy, every key explained (a reference to copy from)"),
        (s.config_dir / "auditshipd.service", render_unit(
            shipped_text("systemd/auditshipd.service"), s), 0o644,
         f"systemd unit (ExecStart={s.executable})"),
    ]
    existing = [str(p) for p, _t, _m, _w in files if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} already exist(s): pass --force to"
                              " overwrite, or --dir for another directory")
    s.config_dir.mkdir(parents=True, exist_ok=True)
    for path, text, mode, _what in files:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    return [(p, what) for p, _t, _m, what in files]


def next_steps(s: InitSettings) -> str:
    unit = s.config_dir / "auditshipd.service"
    g = s.group
    # The commands as they can be pasted: by name when that name finds this install.
    exe = "auditshipd" if shutil.which("auditshipd") == s.executable else s.executable
    return f"""
Next, as root:
  1. The daemon's user:
       useradd --system --user-group --home-dir {s.state_dir} --shell /usr/sbin/nologin {s.user}
  2. The journal directory. Your application (APP_USER) writes it; auditshipd reads it and
     appends its own events (portal access, config changes) through the group {g}:
       install -d -o APP_USER -g {g} -m 2770 {s.journal_dir}
     The application creates journal files group-writable: AuditJournal(path, mode=0o660).
     The daemon checks this at start and says what is wrong.
  3. The config is readable by the daemon's group only (secrets go in /etc/auditshipd/env,
     VAR=value lines, owned by root, mode 0600, referenced as ${{VAR}}):
       chgrp {g} {s.config_path} && chmod 0640 {s.config_path}
       {exe} check-config -c {s.config_path}
  4. The unit:
       install -m 0644 {unit} /etc/systemd/system/auditshipd.service
       systemctl daemon-reload && systemctl enable --now auditshipd
       systemctl status auditshipd; journalctl -u auditshipd -f
  5. A first event, its delivery, and the portal on http://{s.portal_listen}:
       sudo -u APP_USER {exe} emit user.invited --actor-email you@example.com -c {s.config_path}
       {exe} status -c {s.config_path}
       sudo -u {s.user} {exe} token create --name admin --role admin -c {s.config_path}
Docs and examples: {shipped_dir()}
"""


def add_parser(subparsers: Any) -> None:
    d = InitSettings()
    p = subparsers.add_parser(
        "init", help="write a starter config and a systemd unit for this install",
        description=(__doc__ or "").split("\n\n", 1)[0].replace("``", ""),
    )
    p.add_argument("--dir", type=Path, default=d.config_dir, metavar="DIR",
                   help=f"where to write auditshipd.toml, redaction-default.toml and"
                   f" auditshipd.service (default: {d.config_dir})")
    p.add_argument("--journal-dir", type=Path, default=d.journal_dir, metavar="DIR",
                   help=f"directory of the audit journal (default: {d.journal_dir})")
    p.add_argument("--state-dir", type=Path, default=d.state_dir, metavar="DIR",
                   help=f"cursors, dead letters, portal database (default: {d.state_dir})")
    p.add_argument("--logs-dir", type=Path, default=d.logs_dir, metavar="DIR",
                   help=f"directory of the starter file sink (default: {d.logs_dir})")
    p.add_argument("--user", default=d.user,
                   help=f"user (and group) the daemon runs as (default: {d.user})")
    p.add_argument("--portal-listen", default=d.portal_listen, metavar="HOST:PORT",
                   type=_portal_listen,
                   help=f"address of the portal (default: {d.portal_listen})")
    p.add_argument("--metrics-listen", default=d.metrics_listen, metavar="HOST:PORT",
                   type=_metrics_listen,
                   help=f"address of /metrics and the health checks (default: {d.metrics_listen})")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.set_defaults(func=run)


def _portal_listen(value: str) -> str:
    """``--portal-listen`` checked as ``[portal] listen`` is (check-config's parser)."""
    from ..config.tables import parse_listen

    try:
        parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None
    return value


def _metrics_listen(value: str) -> str:
    """``--metrics-listen`` checked as ``[metrics] listen`` is (check-config's parser)."""
    from .metrics import metrics_listen_problem

    problem = metrics_listen_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{value!r}: {problem}")
    return value


def run(args: argparse.Namespace) -> int:
    s = InitSettings(
        config_dir=args.dir.absolute(), journal_dir=args.journal_dir.absolute(),
        state_dir=args.state_dir.absolute(), logs_dir=args.logs_dir.absolute(),
        user=args.user, group=args.user, executable=installed_executable(),
        portal_listen=args.portal_listen, metrics_listen=args.metrics_listen,
    )
    try:
        written = write_files(s, force=args.force)
    except (OSError, ValueError) as exc:
        print(f"auditshipd init: {exc}", file=sys.stderr)
        return 1
    width = max(len(str(p)) for p, _ in written)
    print("Wrote:")
    for path, what in written:
        print(f"  {str(path):<{width}}  {what}")
    for warning in s.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(next_steps(s), end="")
    return 0


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.absolute().relative_to(root)
    except ValueError:
        return False
    return True
