"""auditshipd: ship audit events from an append-only journal to SIEMs, at least once."""

from __future__ import annotations

from .journal.writer import AuditJournal
from .plugins.hookspecs import hookimpl

__all__ = ["AuditJournal", "hookimpl", "__version__"]
__version__ = "0.1.0"
