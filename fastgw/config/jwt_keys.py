"""Loading JWT verification keys from PEM files and JWKS files, refusing anything that is not a public key.

A private key in a verification-key file is a leak waiting to happen: it is refused with the file named.
Symmetric JWKS entries (``kty = "oct"``) are refused too: shared secrets come from secret references.
Every key must suit at least one of the issuer's allowed algorithms (RSA for RS*/PS*, EC for ES*, Ed25519
or Ed448 for EdDSA), so a key can never be used with an algorithm family it was not made for.
"""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization

from fastgw.policy.jwks import parse_jwks
from fastgw.policy.jwt_auth import key_fits


def _fits(key: Any, algorithms: frozenset[str]) -> bool:
    return any(key_fits(key, alg) for alg in algorithms)


def issuer_keys(
    pem_files: list[str], jwks_file: str | None, algorithms: frozenset[str]
) -> tuple[dict[str, Any], list[Any]]:
    """(keys by kid, keys without a kid). Raises ValueError naming the file and the reason."""
    by_kid: dict[str, Any] = {}
    without_kid: list[Any] = []
    for path in pem_files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        if b"PRIVATE KEY" in data:
            raise ValueError(f"{path} holds a private key: give the public key only")
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"{path} is not a PEM public key: {exc}") from None
        if not _fits(key, algorithms):
            raise ValueError(f"{path}: its key type suits none of the allowed algorithms")
        without_kid.append(key)
    if jwks_file is not None:
        try:
            with open(jwks_file, "rb") as fh:
                document = orjson.loads(fh.read())
        except OSError as exc:
            raise ValueError(f"cannot read {jwks_file}: {exc.strerror}") from None
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{jwks_file} is not JSON: {exc}") from None
        file_kid, file_without = parse_jwks(document, lambda key: _fits(key, algorithms), jwks_file)
        by_kid.update(file_kid)
        without_kid.extend(file_without)
    return by_kid, without_kid
