"""The ``[integrity]`` table: the signing key and when digests are due."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config.tables import IntegrityConfig
from ..errors import ConfigError

__all__ = ["IntegritySettings", "integrity_settings"]


@dataclass(frozen=True)
class IntegritySettings:
    key: Any  # keys.SigningKey
    digest_interval: float
    digest_events: int

    def policy(self) -> Any:
        from .digest import DigestPolicy

        return DigestPolicy(self.digest_interval, self.digest_events)


def integrity_settings(t: IntegrityConfig, source: str, needed_by: str | None
                       ) -> IntegritySettings | None:
    """The settings of the ``[integrity]`` table (keys and types checked when the file
    loaded), or None when no sink (``needed_by`` names the first that does) needs them and
    no key is configured. Errors name the file and the key."""
    if t.digest_interval <= 0:
        raise ConfigError("must be positive (seconds)", file=source,
                          key="integrity.digest_interval")
    if t.digest_events < 0:
        raise ConfigError("must be 0 (off) or more", file=source, key="integrity.digest_events")
    if not t.signing_key:
        if needed_by:
            raise ConfigError(f"sink {needed_by!r} has integrity = true: set"
                              " [integrity] signing_key (auditshipd keygen --out FILE)",
                              file=source, key="integrity.signing_key")
        return None
    from .keys import load_signing_key

    key = load_signing_key(t.signing_key, source=source)
    return IntegritySettings(key, t.digest_interval, t.digest_events)
