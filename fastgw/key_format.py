"""API key format and digests: what a key looks like, how it is checked cheaply, how it is stored.

A key is ``fgw_`` + 43 base62 characters (256 random bits from ``secrets``) + 6 base62 characters of
CRC32 over the body. The prefix lets secret scanners recognise a leaked key; the checksum lets a typo or a
guessed string fail before any lookup. Keys are never stored: the store keeps
``HMAC-SHA-256(pepper, key)`` with the pepper's id, so a stolen database is useless without the pepper
(a secret reference in the config), and the pepper can rotate (old keys keep their pepper id).
"""

from __future__ import annotations

import hmac
import secrets
import string
import zlib
from typing import Final

PREFIX: Final = b"fgw_"
BODY_LEN: Final = 43  # 62**43 > 2**256
CHECK_LEN: Final = 6  # 62**6 > 2**32
KEY_LEN: Final = len(PREFIX) + BODY_LEN + CHECK_LEN
_ALPHABET: Final = (string.digits + string.ascii_uppercase + string.ascii_lowercase).encode()


def _base62(value: int, width: int) -> bytes:
    out = bytearray()
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(_ALPHABET[digit])
    return bytes(reversed(out))


def _checksum(body: bytes) -> bytes:
    return _base62(zlib.crc32(body), CHECK_LEN)


def new_key() -> str:
    """A fresh key (shown to its owner once, then only its digest is kept)."""
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), BODY_LEN)
    return (PREFIX + body + _checksum(body)).decode()


def well_formed(key: bytes) -> bool:
    """Prefix, length, alphabet and checksum: a cheap filter before the digest lookup."""
    if len(key) != KEY_LEN or not key.startswith(PREFIX):
        return False
    body = key[len(PREFIX) : len(PREFIX) + BODY_LEN]
    return body.isalnum() and hmac.compare_digest(_checksum(body), key[-CHECK_LEN:])


def key_digest(pepper: bytes, key: bytes) -> bytes:
    return hmac.digest(pepper, key, "sha256")


def display_prefix(key: str) -> str:
    """What logs, lists and the audit log show of a key: enough to recognise it, useless to use it."""
    return key[: len(PREFIX) + 6]
