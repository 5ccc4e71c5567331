"""Secrets of self-service streams (tokens, API keys, HMAC secrets), encrypted at rest.

The portal's store holds a stream's secret options only as AES-256-GCM ciphertext; the
key never enters the store. It comes from ``AUDITSHIPD_SECRETS_KEY`` (the environment of
the portal and of every daemon) or from the file ``[portal] secrets_key_file`` names:
32 random bytes, base64 (``openssl rand -base64 32``). The stream's id is the associated
data, so a ciphertext copied onto another stream's row does not decrypt.

Without a key, the portal refuses to save a stream with secrets and the daemon refuses
to start self-service streams; both say why (:class:`SecretsKeyMissing`).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["ENV_VAR", "SecretBox", "SecretsKeyError", "SecretsKeyMissing", "load_secret_box"]

ENV_VAR = "AUDITSHIPD_SECRETS_KEY"
_VERSION = "v1:"
_NONCE_BYTES = 12


class SecretsKeyError(ValueError):
    """The secrets key is missing, unreadable or not 32 bytes, or a ciphertext does not
    decrypt with it."""


class SecretsKeyMissing(SecretsKeyError):
    """No secrets key is configured."""


def _decode_key(text: str, where: str) -> bytes:
    value = text.strip()
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            return raw
    raise SecretsKeyError(f"{where} must hold 32 random bytes in base64"
                          " (make one with: openssl rand -base64 32)")


class SecretBox:
    """Encrypts and decrypts one stream's secret options (a JSON object)."""

    def __init__(self, key: bytes) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise SecretsKeyError("stream secrets need the cryptography package:"
                                  " pip install 'auditshipd[integrity]'") from None

        self._aead = AESGCM(key)

    def seal(self, stream_id: str, values: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        data = self._aead.encrypt(nonce, msgspec.json.encode(values), stream_id.encode())
        return _VERSION + base64.b64encode(nonce + data).decode("ascii")

    def open(self, stream_id: str, sealed: str | None) -> dict[str, Any]:
        if not sealed:
            return {}
        from cryptography.exceptions import InvalidTag

        if not sealed.startswith(_VERSION):
            raise SecretsKeyError("the stream's secrets are in an unknown format")
        try:
            raw = base64.b64decode(sealed[len(_VERSION):])
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], stream_id.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretsKeyError("the stream's secrets do not decrypt with this secrets key"
                                  " (was the key changed? enter them again)") from None
        value = msgspec.json.decode(plain)
        return value if isinstance(value, dict) else {}


def load_secret_box(key_file: str | None, environ: dict[str, str] | None = None) -> SecretBox:
    """The box of the configured key: ``AUDITSHIPD_SECRETS_KEY`` first, else the key
    file. :class:`SecretsKeyMissing` when neither is set, :class:`SecretsKeyError` when
    the one set is unusable (the message names it, never its value)."""
    env = os.environ if environ is None else environ
    text = env.get(ENV_VAR)
    if text:
        return SecretBox(_decode_key(text, ENV_VAR))
    if key_file:
        try:
            content = Path(key_file).read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretsKeyError(f"cannot read portal.secrets_key_file {key_file}:"
                                  f" {getattr(exc, 'strerror', None) or exc}") from None
        return SecretBox(_decode_key(content, f"portal.secrets_key_file {key_file}"))
    raise SecretsKeyMissing(f"no secrets key: set {ENV_VAR} (or [portal] secrets_key_file) to"
                            " 32 random bytes in base64 (openssl rand -base64 32); stream"
                            " secrets are stored encrypted with it")
