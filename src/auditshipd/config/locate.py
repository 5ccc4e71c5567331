"""Which config file a command uses when ``-c`` is not given, and saying so.

The daemon and the commands that talk to its state (``emit``, ``token``, ``status``,
``dlq``...) must agree on the config, wherever they are run from. The order, as with
Vector and Fluent Bit: ``-c FILE``, ``$AUDITSHIPD_CONFIG``, ``/etc/auditshipd/auditshipd.toml``,
``./config/auditshipd.toml`` (a source checkout), then the embedded default.

Relative paths in a config are relative to the working directory. A command run from
another directory than the daemon would silently make a second ``./var`` there: so a
command that found its config on its own (``/etc`` or the embedded default) refuses to use
a relative directory that does not exist, and every command says on stderr which config and
state dir it used.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["ENV_VAR", "SYSTEM_CONFIG", "LocatedConfig", "add_config_option", "check_relative_dirs",
           "describe", "locate_config"]

ENV_VAR = "AUDITSHIPD_CONFIG"
SYSTEM_CONFIG = Path("/etc/auditshipd/auditshipd.toml")
CHECKOUT_CONFIG = Path("config/auditshipd.toml")


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """The ``-c FILE`` option every command that reads the config takes."""
    parser.add_argument("-c", "--config", default=None, metavar="FILE",
                        help=f"TOML config file (default: ${ENV_VAR}, then {SYSTEM_CONFIG},"
                        f" then ./{CHECKOUT_CONFIG}, then the embedded default)")


@dataclass(frozen=True)
class LocatedConfig:
    path: str | None  # None: the embedded default
    origin: str  # "-c", "$AUDITSHIPD_CONFIG", "system", "checkout", "default"

    @property
    def chosen_by_user(self) -> bool:
        """The user named this file (so relative paths in it are theirs to mean)."""
        return self.origin in ("-c", f"${ENV_VAR}", "checkout")


def locate_config(explicit: str | None, *, system_config: Path = SYSTEM_CONFIG) -> LocatedConfig:
    if explicit:
        return LocatedConfig(explicit, "-c")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return LocatedConfig(env, f"${ENV_VAR}")
    if system_config.is_file():
        return LocatedConfig(str(system_config), "system")
    if CHECKOUT_CONFIG.is_file():
        return LocatedConfig(str(CHECKOUT_CONFIG), "checkout")
    return LocatedConfig(None, "default")


def describe(located: LocatedConfig, config: Any) -> str:
    """One line for stderr: the config used, why, and the state dir it points to."""
    origin = {
        "-c": "given with -c",
        f"${ENV_VAR}": f"from ${ENV_VAR}",
        "system": "found in /etc/auditshipd",
        "checkout": "found in ./config",
        "default": f"no -c, ${ENV_VAR}, {SYSTEM_CONFIG} or ./{CHECKOUT_CONFIG}",
    }[located.origin]
    name = located.path or "the embedded default config"
    return (f"auditshipd: using {name} ({origin}); state dir {Path(config.state_dir).absolute()},"
            f" journal {Path(config.journal.path).absolute()}")


def check_relative_dirs(located: LocatedConfig, config: Any) -> None:
    """Refuse a relative state or journal directory that does not exist here when the
    config was not chosen by the user: it would be a second, empty ``./var``."""
    if located.chosen_by_user:
        return
    for key, value in (("journal.state_dir", config.journal.state_dir),
                       ("journal.path", str(Path(config.journal.path).parent))):
        p = Path(value)
        if not p.is_absolute() and not p.is_dir():
            raise ConfigError(
                f"{value!r} is relative and {p.absolute()} does not exist: this command would"
                " create a second state or journal directory here instead of using the"
                " daemon's. Run it from the daemon's working directory, or pass -c FILE"
                f" (or set ${ENV_VAR}) to name the config the daemon uses",
                file=located.path or "<embedded default>", key=key,
            )
