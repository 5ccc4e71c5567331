"""Ed25519 signing keys: generation, loading, key ids.

A key id is the first 16 hex digits of SHA-256 over the 32 raw public-key bytes: it
names the key in every digest and manifest so keys can rotate (a verifier is given
every public key still in use). Private keys are PKCS#8 PEM files, written 0600.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
except ImportError:  # pragma: no cover - the extra is missing
    Ed25519PrivateKey = Ed25519PublicKey = None  # type: ignore[assignment,misc]

__all__ = [
    "MISSING_EXTRA",
    "PublicKey",
    "SigningKey",
    "generate_key",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "parse_public_key",
]

MISSING_EXTRA = "integrity needs the optional extra: pip install 'auditshipd[integrity]'"


def _require() -> None:
    if Ed25519PrivateKey is None:
        raise ConfigError(MISSING_EXTRA)


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey
    key_id: str

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def base64(self) -> str:
        return base64.b64encode(_raw(self.key)).decode()

    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


@dataclass(frozen=True)
class SigningKey:
    key: Ed25519PrivateKey
    key_id: str

    def sign(self, data: bytes) -> str:
        """The base64 Ed25519 signature of ``data``."""
        return base64.b64encode(self.key.sign(data)).decode()

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.key_id)


def _signing(key: Ed25519PrivateKey) -> SigningKey:
    return SigningKey(key, key_id(_raw(key.public_key())))


def generate_key(out: str | os.PathLike[str]) -> SigningKey:
    """Write a new private key to ``out`` (created 0600, never overwritten) and its
    public key to ``out.pub``."""
    _require()
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    signing = _signing(key)
    Path(f"{out}.pub").write_text(signing.public.pem())
    return signing


def load_signing_key(value: str, *, source: str = "", key: str = "integrity.signing_key"
                     ) -> SigningKey:
    """A private key from a PEM text (``${ENV}`` holding the key) or a PEM file path.
    Errors name the file or the config key, never the key material."""
    _require()
    if value.lstrip().startswith("-----BEGIN"):
        data, where = value.encode(), f"{key} (inline PEM)"
    else:
        try:
            data, where = Path(value).read_bytes(), value
        except OSError as exc:
            raise ConfigError(f"cannot read signing key file: {exc.strerror}",
                              file=source, key=key) from None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not an unencrypted PEM private key ({exc})",
                          file=source, key=key) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(f"{where}: not an Ed25519 key", file=source, key=key)
    return _signing(private)


def parse_public_key(text: str, where: str = "public key") -> PublicKey:
    """A public key as PEM (SubjectPublicKeyInfo) or as the base64 of its 32 raw bytes."""
    _require()
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            public = serialization.load_pem_public_key(text.encode())
            if not isinstance(public, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
        else:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as exc:
        raise ValueError(f"{where}: not an Ed25519 public key ({exc})") from None
    return PublicKey(public, key_id(_raw(public)))


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read public key ({exc})") from None
    return parse_public_key(text, str(path))
