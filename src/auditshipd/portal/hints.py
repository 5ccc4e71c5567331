"""Commands the pages suggest (log in, record a first event), written so that they work
as shown: pasted into a shell on the portal's host, they use the config file the portal
itself was started with."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

__all__ = ["emit_command", "token_command"]


def _config_option(config: Any) -> str:
    source = str(getattr(config, "source", "") or "")
    if not source or source.startswith("<"):  # the embedded default: no -c needed
        return ""
    return " -c " + shlex.quote(os.path.abspath(source))


def _run_as(config: Any) -> str:
    """``sudo -u USER `` when the state dir belongs to a service account (uid 1-999) that
    is not the one running this: the token file must be written as that account."""
    try:
        owner = Path(config.state_dir).stat().st_uid
    except (OSError, AttributeError, TypeError):
        return ""
    if not 0 < owner < 1000 or owner == os.geteuid():
        return ""
    try:
        import pwd

        return f"sudo -u {shlex.quote(pwd.getpwuid(owner).pw_name)} "
    except (ImportError, KeyError):
        return ""


def token_command(config: Any) -> str:
    """Creates an admin token named after the user running it, and prints it."""
    return f'{_run_as(config)}auditshipd token create{_config_option(config)} --name "$USER" --role admin'


def emit_command(config: Any) -> str:
    """Records one test event in the journal the daemon ships from."""
    return (
        f"{_run_as(config)}auditshipd emit{_config_option(config)} user.login "
        "--actor-email you@example.com"
    )
