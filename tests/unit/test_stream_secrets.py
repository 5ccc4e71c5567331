"""Stream secrets at rest: AES-GCM bound to the stream's id, the key from the environment or
a key file, and errors that name the key's source, never its value."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditshipd.portal.stream_secrets import (
    ENV_VAR,
    SecretsKeyError,
    SecretsKeyMissing,
    load_secret_box,
)

KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
OTHER = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def test_sealed_values_open_only_for_their_stream_and_key() -> None:
    """A ciphertext opens with its key and stream id only; it holds no clear value."""
    box = load_secret_box(None, {ENV_VAR: KEY})
    sealed = box.seal("ls_1", {"api_key": "dd-key-0123456789"})
    assert "dd-key-0123456789" not in sealed and sealed.startswith("v1:")
    assert box.open("ls_1", sealed) == {"api_key": "dd-key-0123456789"}
    with pytest.raises(SecretsKeyError, match="do not decrypt"):
        box.open("ls_2", sealed)  # copied onto another stream's row
    with pytest.raises(SecretsKeyError, match="do not decrypt"):
        load_secret_box(None, {ENV_VAR: OTHER}).open("ls_1", sealed)
    assert box.seal("ls_1", {"a": "b"}) != box.seal("ls_1", {"a": "b"})  # fresh nonce


def test_key_sources_and_errors(tmp_path: Path) -> None:
    """The variable wins over the key file; a missing key, an unreadable file and a key of
    the wrong size say what to do and never echo the key."""
    key_file = tmp_path / "secrets.key"
    key_file.write_text(OTHER + "\n")
    sealed = load_secret_box(str(key_file), {}).seal("s", {"x": "y"})
    assert load_secret_box(str(key_file), {ENV_VAR: OTHER}).open("s", sealed) == {"x": "y"}
    with pytest.raises(SecretsKeyError):
        load_secret_box(str(key_file), {ENV_VAR: KEY}).open("s", sealed)
    with pytest.raises(SecretsKeyMissing, match="openssl rand -base64 32"):
        load_secret_box(None, {})
    with pytest.raises(SecretsKeyError, match="cannot read portal.secrets_key_file"):
        load_secret_box(str(tmp_path / "missing.key"), {})
    short = "c2hvcnQta2V5LXZhbHVl"
    with pytest.raises(SecretsKeyError, match=f"{ENV_VAR} must hold 32 random bytes") as info:
        load_secret_box(None, {ENV_VAR: short})
    assert short not in str(info.value)
