"""Checkpoint serializer hardening and encryption at rest.

- Strict msgpack: only langgraph's allowlist of safe types (plus `EXTRA_ALLOWED`) is revived on
  load, so a row written by an attacker cannot import and call arbitrary Python.
- AES-256/192/128-GCM on every serialized value (`KEEL_ENCRYPTION_KEY`); the type tag records the
  cipher and a key id (`msgpack+aesgcm:<kid>`), so rows name the key that sealed them.
- Rotation: new rows use the current key; rows sealed with a key in `KEEL_ENCRYPTION_OLD_KEYS`
  stay readable. A plaintext row, or one sealed with an unknown key, raises `CheckpointCryptoError`.
- Postgres keeps `str`/`int`/`float`/`bool` channel values inline in the `checkpoints` JSONB
  column, outside the serializer; `checkpoints.postgres.PostgresSaver` routes them through it too.
"""

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from langgraph.checkpoint.base import Checkpoint
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import SecretStr

from graph.errors import ConfigError, KeelError
from graph.settings import Settings

CIPHER = "aesgcm"
# Types keel's state needs beyond langgraph's built-in safe list (messages, datetimes, ...).
EXTRA_ALLOWED: tuple[tuple[str, ...], ...] = ()
_NONCE_BYTES = 12
_INLINE = "inline"  # type-tag prefix of a primitive channel value moved out of the JSONB column


class CheckpointCryptoError(KeelError):
    """A checkpoint row that cannot be read under the encryption policy."""

    code = "checkpoint_unreadable"


def parse_key(value: str | SecretStr) -> bytes:
    """An AES key from its setting: 64/48/32 hex digits, base64 of 16/24/32 bytes, or raw text."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    text = text.strip()
    candidates: list[bytes] = []
    try:
        candidates.append(bytes.fromhex(text))
    except ValueError:
        pass
    try:
        candidates.append(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        pass
    candidates.append(text.encode())
    for key in candidates:
        if len(key) in (16, 24, 32):
            return key
    raise ConfigError("an encryption key must be 16, 24 or 32 bytes (raw, hex or base64)")


def key_id(key: bytes) -> str:
    """A short, non-secret name for a key (stored with each row)."""
    return hashlib.sha256(b"keel-checkpoint-key:" + key).hexdigest()[:12]


class AesGcmCipher:
    """langgraph's `CipherProtocol` with AES-GCM, a random 96-bit nonce per value and key ids."""

    def __init__(self, key: bytes, old_keys: Iterable[bytes] = ()):
        self.current = key_id(key)
        self._keys = {key_id(k): AESGCM(k) for k in (*old_keys, key)}

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        nonce = os.urandom(_NONCE_BYTES)
        return f"{CIPHER}:{self.current}", nonce + self._keys[self.current].encrypt(
            nonce, plaintext, None
        )

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        name, _, kid = ciphername.partition(":")
        if name != CIPHER:
            raise CheckpointCryptoError(f"checkpoint row sealed with unknown cipher {name!r}")
        aead = self._keys.get(kid)
        if aead is None:
            raise CheckpointCryptoError(
                f"checkpoint row sealed with key {kid!r}, which is neither KEEL_ENCRYPTION_KEY "
                "nor listed in KEEL_ENCRYPTION_OLD_KEYS"
            )
        try:
            return aead.decrypt(ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:], None)
        except InvalidTag as exc:
            raise CheckpointCryptoError(f"checkpoint row failed authentication ({kid})") from exc


class _Inline:
    """A primitive channel value routed through the serializer instead of the JSONB column."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class KeelSerializer(SerializerProtocol):
    """Strict msgpack, then AES-GCM when a cipher is given; refuses plaintext rows when it is."""

    def __init__(self, cipher: AesGcmCipher | None = None):
        self.cipher = cipher
        self.inner = JsonPlusSerializer(allowed_msgpack_modules=EXTRA_ALLOWED or None)

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        prefix = ""
        if isinstance(obj, _Inline):
            prefix, obj = f"{_INLINE}.", obj.value
        typ, data = self.inner.dumps_typed(obj)
        if self.cipher is None:
            return prefix + typ, data
        ciphername, sealed = self.cipher.encrypt(data)
        return f"{prefix}{typ}+{ciphername}", sealed

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        typ, payload = data
        typ = typ.removeprefix(f"{_INLINE}.")
        if self.cipher is None:
            if "+" in typ:
                raise CheckpointCryptoError(
                    "checkpoint row is encrypted but KEEL_ENCRYPTION_KEY is not set"
                )
            return self.inner.loads_typed((typ, payload))
        if "+" not in typ:
            raise CheckpointCryptoError(
                f"plaintext checkpoint row (type {typ!r}) refused: encryption is on; re-encrypt "
                "or delete rows written before KEEL_ENCRYPTION_KEY was set"
            )
        inner_type, ciphername = typ.split("+", 1)
        return self.inner.loads_typed((inner_type, self.cipher.decrypt(ciphername, payload)))


# A text value sealed outside the checkpoints (a thread's title): this prefix, the serializer's
# type tag (naming the key), ":", then the sealed bytes in base64.
SEALED_TEXT = "sealed:"


def seal_text(serde: SerializerProtocol | None, text: str) -> str:
    """`text` sealed as a checkpoint value is, or as it is when no key is configured."""
    if not isinstance(serde, KeelSerializer) or serde.cipher is None:
        return text
    typ, data = serde.dumps_typed(text)
    return f"{SEALED_TEXT}{typ}:{base64.b64encode(data).decode()}"


def open_text(serde: SerializerProtocol | None, value: str) -> str:
    """The text `seal_text` sealed; other text as it is (written before the key was set)."""
    if not value.startswith(SEALED_TEXT):
        return value
    if not isinstance(serde, KeelSerializer) or serde.cipher is None:
        raise CheckpointCryptoError(
            "a thread title is encrypted but KEEL_ENCRYPTION_KEY is not set"
        )
    typ, _, data = value.removeprefix(SEALED_TEXT).rpartition(":")
    return str(serde.loads_typed((typ, base64.b64decode(data))))


def build_serde(settings: Settings) -> KeelSerializer:
    """The checkpoint serializer for these settings: strict, and encrypted when a key is set."""
    if settings.encryption_key is None:
        if settings.encryption_old_keys:
            raise ConfigError("KEEL_ENCRYPTION_OLD_KEYS is set without KEEL_ENCRYPTION_KEY")
        return KeelSerializer()
    cipher = AesGcmCipher(
        parse_key(settings.encryption_key), [parse_key(k) for k in settings.encryption_old_keys]
    )
    return KeelSerializer(cipher)


def seal_inline_values(checkpoint: Checkpoint) -> Checkpoint:
    """The checkpoint with its non-None primitive channel values wrapped for the serializer."""
    values = {
        k: _Inline(v) if isinstance(v, (str, int, float, bool)) else v
        for k, v in checkpoint["channel_values"].items()
    }
    return {**checkpoint, "channel_values": values}


def old_keys_from(values: Sequence[str]) -> list[SecretStr]:
    """Settings' form of a list of keys (for tests and tools)."""
    return [SecretStr(v) for v in values]
