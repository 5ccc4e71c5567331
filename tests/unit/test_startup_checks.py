"""What the daemon says at start about the journal directory and the redaction tier."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from auditshipd.redaction import ctier
from auditshipd.service.startup_checks import check_journal_dir, redaction_tier_warning

NOBODY = 65534


def _config(journal):
    return SimpleNamespace(journal=SimpleNamespace(path=str(journal)), source="a.toml")


def _as_unprivileged(fn: Callable[[], Any]) -> tuple[str, Any]:
    """Run ``fn`` as a user the permission bits apply to: this user when it is not root,
    otherwise a forked child that drops to uid/gid 65534 (root passes every access check,
    so as root the check could not fail). Returns ("ok", result) or (exception name, text)."""

    def call() -> tuple[str, Any]:
        try:
            return "ok", fn()
        except Exception as exc:
            return type(exc).__name__, str(exc)

    if os.geteuid() != 0:
        return call()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            data = pickle.dumps(call())
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    assert data, "the unprivileged child wrote no result"
    return pickle.loads(data)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp dir every user can enter (pytest's tmp_path is 0700: uid 65534 could not
    reach anything under it)."""
    path = Path(tempfile.mkdtemp(prefix="auditshipd-checks-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_missing_directory_is_created(tmp_path):
    """A journal directory that does not exist yet is created, no warning."""
    assert check_journal_dir(_config(tmp_path / "j" / "audit.jsonl")) == []
    assert (tmp_path / "j").is_dir()


def test_unwritable_directory_is_an_error_or_warning(open_tmp):
    """A read-only parent: a clear error naming the command that creates the directory; a
    read-only journal directory: a warning that the daemon's own events cannot be recorded.
    (As root the check runs as uid 65534, for whom the mode bits hold.)"""
    ro = open_tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    kind, text = _as_unprivileged(lambda: check_journal_dir(_config(ro / "j" / "audit.jsonl")))
    assert kind == "ConfigError" and "install -d" in text and "cannot be created" in text
    assert not (ro / "j").exists()
    kind, warnings = _as_unprivileged(lambda: check_journal_dir(_config(ro / "audit.jsonl")))
    assert kind == "ok", warnings
    (warning,) = warnings
    assert "not writable" in warning and str(ro) in warning


def test_journal_file_the_daemon_cannot_append_to_is_reported(open_tmp):
    """A journal file without write permission for the daemon (in a directory it can
    write): a warning naming the file and the fix. (As root: run as uid 65534.)"""
    shared = open_tmp / "journal"
    shared.mkdir()
    shared.chmod(0o777)
    journal = shared / "audit.jsonl"
    journal.write_text("")
    journal.chmod(0o440)
    (shared / ".audit.jsonl.lock").write_text("")
    (shared / ".audit.jsonl.lock").chmod(0o666)
    kind, warnings = _as_unprivileged(lambda: check_journal_dir(_config(journal)))
    assert kind == "ok", warnings
    assert len(warnings) == 1 and "chmod g+rw" in warnings[0] and str(journal) in warnings[0]


def test_group_shared_directory_gets_group_writable_journal_and_lock_files(tmp_path):
    """In a setgid (group-shared) directory the daemon may create the journal first: it
    creates it and the lock file 0660 whatever its umask, so the application can append."""
    shared = tmp_path / "journal"
    shared.mkdir()
    shared.chmod(0o2770)
    old = os.umask(0o027)
    try:
        assert check_journal_dir(_config(shared / "audit.jsonl")) == []
    finally:
        os.umask(old)
    for name in ("audit.jsonl", ".audit.jsonl.lock"):
        assert stat.S_IMODE((shared / name).stat().st_mode) == 0o660


def test_redaction_tier_warning_only_without_the_c_extension(monkeypatch):
    """Built with the C tier: silent. Without it: one line saying the Python path is used and
    how to get the fast one. Switched off on purpose (AUDITSHIPD_REDACT_C=0): silent."""
    monkeypatch.delenv("AUDITSHIPD_REDACT_C", raising=False)
    if ctier._redact_c is not None:
        assert redaction_tier_warning() is None
    monkeypatch.setattr(ctier, "_redact_c", None)
    warning = redaction_tier_warning()
    assert warning and "Python path" in warning and "python3-dev" in warning
    assert "--force-reinstall" in warning
    monkeypatch.setenv("AUDITSHIPD_REDACT_C", "0")
    assert redaction_tier_warning() is None
