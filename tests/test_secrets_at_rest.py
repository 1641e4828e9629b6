"""Provider keys at rest (fastgw/secrets_at_rest.py): AES-256-GCM round trips, and every way a stored key
can be the wrong one (another master key, a changed byte, another provider's row) is refused."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.config.errors import ConfigError
from fastgw.secrets_at_rest import (
    KEY_BYTES,
    NONCE_BYTES,
    MasterKey,
    MasterKeys,
    UnsealError,
    decode_master_key,
    display_prefix,
    key_id,
    master_keys,
    seal,
    unseal,
)
from fastgw.snapshot import SecretRef

SECRET = bytes(range(32))
KEY = MasterKey(key_id(SECRET), SECRET)
KEYS = MasterKeys(KEY)


def ref(env: str) -> SecretRef:
    return SecretRef(kind="env", name=env, key="llm.master_key", file="gw.toml")


@given(provider=st.text(min_size=1, max_size=40), plaintext=st.binary(max_size=512))
def test_a_sealed_key_opens_to_what_was_sealed(provider: str, plaintext: bytes) -> None:
    sealed = seal(KEY, provider, plaintext)
    assert sealed.key_id == hashlib.sha256(SECRET).hexdigest()[:8]
    assert len(sealed.nonce) == NONCE_BYTES
    assert len(plaintext) < 8 or plaintext not in sealed.ciphertext  # shorter: a chance match
    assert unseal(KEYS, provider, sealed) == plaintext


def test_each_seal_has_a_fresh_nonce() -> None:
    nonces = {seal(KEY, "openai", b"sk-same").nonce for _ in range(200)}
    assert len(nonces) == 200


def test_another_master_key_is_refused() -> None:
    sealed = seal(KEY, "openai", b"sk-live-123")
    other_secret = os.urandom(32)
    other = MasterKey(key_id(other_secret), other_secret)
    with pytest.raises(UnsealError, match=f"master key {KEY.id}, which is neither"):
        unseal(MasterKeys(other), "openai", sealed)
    # Same id claimed by a different secret (a row's key_id edited to the configured key's): the tag fails.
    with pytest.raises(UnsealError, match="does not decrypt"):
        unseal(MasterKeys(other), "openai", replace(sealed, key_id=other.id))


@pytest.mark.parametrize("field", ["nonce", "ciphertext"])
def test_a_changed_byte_is_refused(field: str) -> None:
    sealed = seal(KEY, "openai", b"sk-live-123")
    for i in range(len(getattr(sealed, field))):
        data = bytearray(getattr(sealed, field))
        data[i] ^= 0x01
        with pytest.raises(UnsealError, match="the row was changed, or belongs to another provider"):
            unseal(KEYS, "openai", replace(sealed, **{field: bytes(data)}))


def test_a_row_moved_to_another_provider_is_refused() -> None:
    sealed = seal(KEY, "openai", b"sk-live-123")
    with pytest.raises(UnsealError, match="provider 'groq'"):
        unseal(KEYS, "groq", sealed)


def test_a_previous_master_key_still_opens_its_rows() -> None:
    old_secret = os.urandom(32)
    old = MasterKey(key_id(old_secret), old_secret)
    sealed = seal(old, "anthropic", b"sk-ant-1")
    assert unseal(MasterKeys(KEY, (old,)), "anthropic", sealed) == b"sk-ant-1"
    with pytest.raises(UnsealError, match=old.id):
        unseal(MasterKeys(KEY), "anthropic", sealed)


@pytest.mark.parametrize(
    "text",
    [
        SECRET.hex().encode(),
        SECRET.hex().upper().encode() + b"\n",
        base64.b64encode(SECRET),
        base64.urlsafe_b64encode(SECRET).rstrip(b"="),
    ],
)
def test_a_master_key_is_hex_or_base64_of_32_bytes(text: bytes) -> None:
    assert decode_master_key(text) == SECRET


@pytest.mark.parametrize(
    "text",
    [
        b"correct horse battery staple",  # a passphrase is not a key
        SECRET.hex()[:-2].encode(),  # 31 bytes of hex
        base64.b64encode(SECRET + b"x"),  # 33 bytes
        base64.b64encode(SECRET[:16]),  # AES-128-sized
        b"g" * 64,  # 64 characters, not hex, not base64 of 32 bytes
        SECRET,  # raw bytes
    ],
)
def test_anything_else_is_refused_without_echoing_it(text: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="must be 32 random bytes written as 64 hex digits or as base64"):
        decode_master_key(text)
    if b"\x00" not in text:
        monkeypatch.setenv("MK", text.decode("latin-1"))
        with pytest.raises(ConfigError) as err:
            master_keys(ref("MK"))
        assert "llm.master_key" in str(err.value) and "openssl rand -hex 32" in str(err.value)
        assert text.decode("latin-1").strip() not in str(err.value)


def test_master_keys_from_references_with_ids(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old = os.urandom(KEY_BYTES)
    monkeypatch.setenv("MK", SECRET.hex())
    (tmp_path / "old").write_bytes(base64.b64encode(old) + b"\n")
    previous = SecretRef(kind="file", name=str(tmp_path / "old"), key="llm.previous_master_keys[0]", file="x")
    keys = master_keys(ref("MK"), (previous,))
    assert keys.current == KEY and keys.previous == (MasterKey(key_id(old), old),)
    assert SECRET.hex() not in repr(keys) and str(SECRET) not in repr(keys)  # never in a traceback
    twice = replace(previous, name="MK", kind="env")
    with pytest.raises(ConfigError, match=r"previous_master_keys\[0\]: master key .* is listed twice"):
        master_keys(ref("MK"), (twice,))
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        master_keys(ref("NOPE"))


def test_display_prefix_shows_ends_of_long_keys_only() -> None:
    assert display_prefix("sk-proj-abcdefghijklmnop1234") == "sk-p...1234"
    assert display_prefix("ollama") == "****"
