"""The files the package ships for users: example configs, the systemd unit, the docs.

They live once, at the top of the source tree (``config/``, ``systemd/``, ``docs/``,
``README.md``, ``LICENSE``); a built wheel carries copies under ``auditshipd/share/``
(``setup.py``). An editable install or a source checkout has no copies: the source tree
is used.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["shipped_dir", "shipped_path", "shipped_text"]

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir() -> Path:
    """The directory holding the shipped files (``share/`` of the wheel or the source tree)."""
    share = _PACKAGE / "share"
    if (share / "systemd").is_dir():
        return share
    tree = _PACKAGE.parent.parent  # src/auditshipd -> the checkout
    if (tree / "systemd").is_dir() and (tree / "config").is_dir():
        return tree
    raise FileNotFoundError(
        f"the files shipped with auditshipd are missing (looked in {share} and {tree}):"
        " reinstall auditshipd"
    )


def shipped_path(name: str) -> Path:
    """Path of one shipped file, e.g. ``systemd/auditshipd.service``."""
    path = shipped_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not shipped with this install of auditshipd")
    return path


def shipped_text(name: str) -> str:
    return shipped_path(name).read_text("utf-8")
