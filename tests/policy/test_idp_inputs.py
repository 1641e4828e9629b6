"""What the gateway takes from an identity provider: a JWKS document (policy/jwks.py ``parse_jwks``), the
signing keys it can use, entries it cannot (encryption keys, algorithms pyjwt lacks) skipped rather than
refusing the set; and a token's roles and scopes, which must survive the identity headers' joining."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fastgw.policy.jwks import parse_jwks


def public_jwk(key: Any, **extra: str) -> dict[str, Any]:
    algorithm = (
        jwt.algorithms.ECAlgorithm
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else jwt.algorithms.RSAAlgorithm
    )
    entry: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**entry, **extra}


def test_an_encryption_key_beside_the_signing_key_is_skipped_not_the_whole_set() -> None:
    """Keycloak publishes an RSA-OAEP encryption key in its JWKS by default: one such entry refused the
    whole set, every token got 401 at the first start (or a day later, past jwks_max_stale)."""
    signing = ec.generate_private_key(ec.SECP256R1())
    encryption = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = {
        "keys": [
            public_jwk(encryption, kid="enc-1", use="enc", alg="RSA-OAEP"),
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"},
            public_jwk(signing, kid="sig-1", use="sig", alg="ES256"),
        ]
    }
    by_kid, without_kid = parse_jwks(document, lambda key: True, "the JWKS")
    assert list(by_kid) == ["sig-1"] and without_kid == []


def test_a_set_with_no_usable_key_is_still_an_error_naming_what_was_skipped() -> None:
    encryption = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ValueError) as refused:
        parse_jwks({"keys": [public_jwk(encryption, kid="e", use="enc")]}, lambda key: True, "the JWKS")
    assert str(refused.value) == "the JWKS: keys[0]: an encryption key (use 'enc'): no usable key"


def test_a_role_with_a_comma_or_a_scope_with_a_space_is_no_usable_identity() -> None:
    """The identity headers join roles with commas and scopes with spaces: a token's role "viewer,admin",
    one role to the gateway's authorize, reached the upstream as two, one of them admin."""
    from fastgw.policy.rbac import Principal, usable_identity

    def principal(roles: set[str], scopes: set[str]) -> Principal:
        return Principal("alice", "alice", "", frozenset(roles), frozenset(scopes))

    assert usable_identity(principal({"viewer", "admin"}, {"read", "write"}))
    assert not usable_identity(principal({"viewer,admin"}, set()))
    assert not usable_identity(principal(set(), {"read admin"}))
