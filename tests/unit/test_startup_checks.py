"""What the daemon says at start about the journal directory and the redaction tier."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest

from auditshipd import redact_fast
from auditshipd.errors import ConfigError
from auditshipd.startup_checks import check_journal_dir, redaction_tier_warning


def _config(journal):
    return SimpleNamespace(journal=SimpleNamespace(path=str(journal)), source="a.toml")


def test_missing_directory_is_created(tmp_path):
    """A journal directory that does not exist yet is created, no warning."""
    assert check_journal_dir(_config(tmp_path / "j" / "audit.jsonl")) == []
    assert (tmp_path / "j").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: the check cannot fail")
def test_unwritable_directory_is_an_error_or_warning(tmp_path):
    """(non-root only) A read-only parent: a clear error naming the command; a read-only
    journal directory: a warning that the daemon's own events cannot be recorded."""
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="install -d"):
        check_journal_dir(_config(ro / "j" / "audit.jsonl"))
    (warning,) = check_journal_dir(_config(ro / "audit.jsonl"))
    assert "not writable" in warning


def test_journal_file_the_daemon_cannot_append_to_is_reported(tmp_path):
    """A journal file without write permission for the daemon: a warning naming the file
    and the fix (as root the permission bits are not enforced, so the file's mode is
    checked through os.access, which a chattr-less test can only exercise as non-root)."""
    journal = tmp_path / "audit.jsonl"
    journal.write_text("")
    journal.chmod(0o440)
    warnings = check_journal_dir(_config(journal))
    if os.geteuid() == 0:
        assert warnings == []
    else:
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
    if redact_fast._redact_c is not None:
        assert redaction_tier_warning() is None
    monkeypatch.setattr(redact_fast, "_redact_c", None)
    warning = redaction_tier_warning()
    assert warning and "Python path" in warning and "python3-dev" in warning
    assert "--force-reinstall" in warning
    monkeypatch.setenv("AUDITSHIPD_REDACT_C", "0")
    assert redaction_tier_warning() is None
