"""An identity provider for JWT tests: an ES256 key pair, its public key as a PEM file a config can name
(``public_keys = [...]``), and tokens it signs with pyjwt the way a real one would."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://idp.example.test/"


@dataclass(frozen=True)
class Idp:
    key: ec.EllipticCurvePrivateKey
    public_pem: Path
    name: str = "idp"  # its [jwt.issuers.NAME] table
    issuer: str = ISSUER

    @classmethod
    def create(cls, directory: Path, name: str = "idp", issuer: str = ISSUER) -> Idp:
        """A provider with a new key; several in one directory need their own ``name`` and ``issuer``."""
        key = ec.generate_private_key(ec.SECP256R1())
        pem = directory / f"{name}.pem"
        pem.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return cls(key, pem, name, issuer)

    def issuer_table(self, extra: str = "") -> str:
        """``[jwt.issuers.NAME]`` trusting this provider's key (no audience asked), plus ``extra`` lines."""
        return f"""
[jwt.issuers.{self.name}]
issuer = "{self.issuer}"
audiences = []
algorithms = ["ES256"]
public_keys = ["{self.public_pem}"]
{extra}
"""

    def token(self, **claims: Any) -> str:
        """A token for subject ``svc``, valid for five minutes; ``claims`` add to or replace those."""
        base = {"iss": self.issuer, "sub": "svc", "exp": int(time.time()) + 300}
        return jwt.encode({**base, **claims}, self.key, algorithm="ES256")
