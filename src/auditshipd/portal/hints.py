"""Commands the pages suggest (log in, record a first event), written so that they work
as shown: pasted into a shell on the portal's host, they use the config file the portal
itself was started with.

The login page is open to anyone who reaches the portal, so it spells out the host's
details (config path, working directory, service account, install path) only to a
browser on the portal's own host (:func:`from_this_host`); others get the command with a
``CONFIG`` placeholder."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from ..netguard import is_loopback
from ..service.scaffold import installed_executable

__all__ = ["emit_command", "from_this_host", "token_command"]


def _config_option(config: Any) -> str:
    source = str(getattr(config, "source", "") or "")
    if not source or source.startswith("<"):  # the embedded default: no -c needed
        return ""
    return " -c " + shlex.quote(os.path.abspath(source))


def _relative_paths(config: Any) -> bool:
    """The config names its journal or state dir relative to the working directory."""
    journal = getattr(config, "journal", None)
    values = [getattr(journal, "state_dir", ""), getattr(journal, "path", "")]
    return any(v and not os.path.isabs(str(v)) for v in values)


def _prefix(config: Any) -> str:
    """``cd DIR && `` when the config's paths are relative: they mean the directory the
    portal runs in, so the command must run there too, or it would use a second, empty
    ``./var`` wherever it is pasted. Then ``sudo -u USER`` when needed."""
    cd = f"cd {shlex.quote(os.getcwd())} && " if _relative_paths(config) else ""
    return cd + _run_as(config)


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


def _program() -> str:
    """``auditshipd`` when a shell finds this install under that name; otherwise the
    full path of this install's script (a venv not on ``PATH``, as a clone's ``.venv``
    is), which a shell runs from anywhere."""
    own = installed_executable()
    if not os.path.isfile(own):
        return "auditshipd"  # not found: the name is the best guess
    found = shutil.which("auditshipd")
    if found is not None and os.path.realpath(found) == os.path.realpath(own):
        return "auditshipd"
    return shlex.quote(own)


# Headers a reverse proxy adds: behind one, every request comes from loopback.
_FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def from_this_host(request: Any) -> bool:
    """``request`` (an aiohttp request) came straight from the portal's host: a loopback
    peer, and no proxy's forwarding header."""
    if any(name in request.headers for name in _FORWARDED):
        return False
    return is_loopback(request.remote)


def token_command(config: Any, *, local: bool = True) -> str:
    """Creates an admin token named after the user running it, and prints it. Not
    ``local``: without the host's details (``-c CONFIG`` when the portal runs on a
    config file, no path, directory or account)."""
    if not local:
        option = " -c CONFIG" if _config_option(config) else ""
        return f'auditshipd token create{option} --name "$USER" --role admin'
    return (f'{_prefix(config)}{_program()} token create{_config_option(config)}'
            ' --name "$USER" --role admin')


def emit_command(config: Any) -> str:
    """Records one test event in the journal the daemon ships from."""
    return (
        f"{_prefix(config)}{_program()} emit{_config_option(config)} user.login "
        "--actor-email you@example.com"
    )
