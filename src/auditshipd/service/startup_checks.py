"""What the daemon checks once at start and says plainly, before anything runs.

- The journal directory: the daemon appends its own events there (portal access, config
  changes), so it must be able to create and write files in it; under systemd's sandbox a
  directory that does not exist cannot be created. Each problem is said once with the
  command that fixes it.
- The redaction tier: without the C extension (installed without a compiler) redaction
  runs on its Python path; the same output, slower. Said once, with how to get the fast one.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..journal.writer import group_shared, open_with_mode

__all__ = ["check_journal_dir", "redaction_tier_warning", "run_startup_checks"]

log = logging.getLogger("auditshipd")

_SHARED_DIR_HINT = ("the directory is shared through a group: install -d -o APP_USER -g GROUP"
                    " -m 2770 {dir} (GROUP: the daemon's group; the application creates its files"
                    " with AuditJournal(path, mode=0o660))")


def run_startup_checks(config: Any, logger: logging.Logger = log) -> None:
    logger.info("config %s, state dir %s", config.source, Path(config.state_dir).absolute())
    for warning in check_journal_dir(config):
        logger.warning("%s", warning)
    tier = redaction_tier_warning()
    if tier:
        logger.warning("%s", tier)


def check_journal_dir(config: Any) -> list[str]:
    """Create the journal directory if needed (a clear error if impossible); return
    warnings about what the daemon cannot write there."""
    journal = Path(config.journal.path)
    directory = journal.parent
    if not directory.is_dir():
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"the journal directory {directory.absolute()} does not exist and cannot be"
                f" created ({exc.strerror}); create it before starting the daemon: "
                + _SHARED_DIR_HINT.format(dir=directory.absolute()),
                file=config.source, key="journal.path",
            ) from None
    lock = journal.with_name(f".{journal.name}.lock")
    warnings = []
    if not os.access(directory, os.W_OK | os.X_OK):
        warnings.append(
            f"the journal directory {directory.absolute()} is not writable by this daemon"
            f" (uid {os.geteuid()}): its own audit events (portal access, config changes) cannot"
            " be recorded until it is; " + _SHARED_DIR_HINT.format(dir=directory.absolute()))
        return warnings
    shared = group_shared(directory)
    for path in (journal, lock):
        if path.exists():
            if not os.access(path, os.R_OK | os.W_OK):
                warnings.append(
                    f"{path.absolute()} is not readable and writable by this daemon (uid"
                    f" {os.geteuid()}, mode {stat.filemode(path.stat().st_mode)}): its own audit"
                    " events cannot be appended to the journal; give its group write access"
                    " (chmod g+rw) and create journal files with AuditJournal(path,"
                    " mode=0o660)")
        elif shared:
            # In a group-shared directory the daemon may be the first to create the file;
            # its umask (0027 in the unit) would leave the application unable to append.
            _create_group_writable(path)
    return warnings


def _create_group_writable(path: Path) -> None:
    try:
        os.close(open_with_mode(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, 0o660))
    except OSError as exc:
        log.warning("cannot create %s: %s", path, exc.strerror)


def redaction_tier_warning() -> str | None:
    """The one-line notice for a redaction running without its C extension, else None."""
    if os.environ.get("AUDITSHIPD_REDACT_C", "1") == "0":
        return None  # switched off on purpose
    from ..redaction import ctier

    if ctier._redact_c is not None:
        return None
    return ("redaction runs on its Python path (the same output, about 3x slower per event):"
            " the C extension auditshipd.redaction._redact_c was not built when auditshipd was installed"
            " (no C compiler or Python headers then). For the fast path install them (Debian/"
            "Ubuntu: apt-get install gcc python3-dev) and reinstall: pip install"
            " --force-reinstall --no-deps --no-cache-dir auditshipd (pipx: pipx reinstall"
            " auditshipd)")
