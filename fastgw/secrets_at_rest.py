"""Provider keys at rest: AES-256-GCM under a master key that can rotate.

A provider key set with ``fastgw providers set-key`` is kept in the store only as ciphertext: AES-256-GCM
with a fresh 96-bit random nonce per encryption and the provider's name in the associated data, so a row
copied onto another provider's name fails to decrypt instead of sending one provider's key to another.
Each row carries the id of the master key that sealed it (the first 8 hex digits of the key's SHA-256),
so a new master key can come in while the old one, listed in ``previous_master_keys``, still opens the
rows it sealed until ``fastgw providers rotate-master-key`` has re-encrypted them.

The master key itself comes from a secret reference (env, file, systemd credential), written as 64 hex
digits or as base64 of exactly 32 bytes: anything else is refused, never stretched or padded into a key.
Nothing here logs or formats a key: errors name the config key or the provider, never a secret.

``cryptography`` is imported by the two functions that use it: every process compiles the config that
names the master key, but only the control process seals and opens keys, and the library's OpenSSL
bindings add ~10 MiB to each worker's RSS (tests/e2e/test_resources.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from typing import Final

from fastgw.config.errors import ConfigError
from fastgw.secret_refs import resolve_secret
from fastgw.snapshot import SecretRef

KEY_BYTES: Final = 32  # AES-256
# 96 bits: GCM's native nonce size (NIST SP 800-38D 8.2.2). Random nonces stay safe for far more than the
# 2^32 encryptions under one key the standard allows; a gateway seals a few keys per operator action.
NONCE_BYTES: Final = 12
KEY_ID_HEX: Final = 8  # 32 bits of the key's SHA-256: tells a handful of master keys apart, reveals nothing
# The associated data binds a ciphertext to its purpose and its provider (a context label first, so the
# same master key could seal other kinds of secret later without one passing for another).
AAD_LABEL: Final = b"fastgw provider key\x00"
# A display prefix shows the first and last 4 characters; for a key shorter than this they would be most
# of it, so a short key shows as "****" only.
DISPLAY_MIN_CHARS: Final = 16
MAKE_ONE: Final = "make one with: openssl rand -hex 32"


class UnsealError(Exception):
    """A stored key could not be decrypted: its master key is not configured, or the ciphertext, its
    nonce or its provider name was changed. The message names the provider and key id, nothing secret."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    id: str  # first KEY_ID_HEX hex digits of SHA-256(secret)
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class MasterKeys:
    """The master key new rows are sealed with, and the retired ones that still open old rows."""

    current: MasterKey
    previous: tuple[MasterKey, ...] = ()

    def by_id(self, key_id: str) -> MasterKey | None:
        for key in (self.current, *self.previous):
            if key.id == key_id:
                return key
        return None


@dataclass(frozen=True, slots=True)
class Sealed:
    """One encrypted provider key as the store keeps it."""

    key_id: str
    nonce: bytes
    ciphertext: bytes  # AES-GCM output: the encrypted key followed by its 16-byte tag


def key_id(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()[:KEY_ID_HEX]


def decode_master_key(text: bytes) -> bytes:
    """The 32 key bytes of a master key written as 64 hex digits or base64 (standard or URL-safe, padded
    or not). Raises ValueError saying what was wrong, never what was given."""
    text = text.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass  # 64 characters that are not hex: perhaps base64 of 48 bytes, refused below
    standard = text.replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
    try:
        decoded = base64.b64decode(standard + b"=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == KEY_BYTES:
        return decoded
    raise ValueError(
        f"must be {KEY_BYTES} random bytes written as {2 * KEY_BYTES} hex digits or as base64"
        f" ({len(text)} characters that decode to neither); {MAKE_ONE}"
    )


def master_key(ref: SecretRef) -> MasterKey:
    """A master key from its secret reference. Raises ConfigError naming the config key."""
    try:
        secret = decode_master_key(resolve_secret(ref))
    except ValueError as exc:
        raise ConfigError(ref.file, ref.key, f"the master key ({ref.kind} {ref.name}) {exc}") from None
    return MasterKey(key_id(secret), secret)


def master_keys(current: SecretRef, previous: tuple[SecretRef, ...] = ()) -> MasterKeys:
    """The configured master keys; a previous key equal to the current or to another is refused (the
    same id twice would leave it unclear which key a row needs)."""
    keys = MasterKeys(master_key(current), tuple(master_key(ref) for ref in previous))
    seen = {keys.current.id}
    for ref, key in zip(previous, keys.previous, strict=True):
        if key.id in seen:
            raise ConfigError(ref.file, ref.key, f"master key {key.id} is listed twice")
        seen.add(key.id)
    return keys


def _aad(provider: str) -> bytes:
    return AAD_LABEL + provider.encode()


def seal(key: MasterKey, provider: str, plaintext: bytes) -> Sealed:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(NONCE_BYTES)
    return Sealed(key.id, nonce, AESGCM(key.secret).encrypt(nonce, plaintext, _aad(provider)))


def unseal(keys: MasterKeys, provider: str, sealed: Sealed) -> bytes:
    """The provider key, or UnsealError (unknown master key id, or anything changed)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = keys.by_id(sealed.key_id)
    if key is None:
        raise UnsealError(
            f"provider {provider!r}: its key was sealed with master key {sealed.key_id}, which is neither"
            " llm.master_key nor in llm.previous_master_keys"
        )
    try:
        return AESGCM(key.secret).decrypt(sealed.nonce, sealed.ciphertext, _aad(provider))
    except (InvalidTag, ValueError):
        raise UnsealError(
            f"provider {provider!r}: the stored key does not decrypt under master key {key.id}"
            " (the row was changed, or belongs to another provider)"
        ) from None


def display_prefix(key: str) -> str:
    """What lists show of a provider key: its first and last 4 characters, or only stars when short."""
    if len(key) < DISPLAY_MIN_CHARS:
        return "****"
    return f"{key[:4]}...{key[-4:]}"
