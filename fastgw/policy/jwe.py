"""Nested JWE tokens (``[jwt.jwe]``): the outer encryption layer a JWT may come in, removed before the
inner JWS is verified (policy/jwt_auth.py)."""

from __future__ import annotations

from typing import Any


class JweDecrypter:
    """Nested JWE (RFC 7516 compact, RFC 7519 5.2): the outer layer is decrypted with joserfc, a
    maintained JOSE library, rather than our own code; the inner JWS is then verified as any other.
    Only RSA-OAEP-256 or dir key management with A256GCM content encryption are accepted."""

    def __init__(self, key: Any, algorithm: str, required: bool) -> None:
        from joserfc import jwe

        self._jwe = jwe
        self._key = key
        self._registry = jwe.JWERegistry(algorithms=[algorithm, "A256GCM"])
        self.required = required

    def decrypt(self, token: str) -> str | None:
        from joserfc.errors import JoseError

        try:
            result = self._jwe.decrypt_compact(token, self._key, registry=self._registry)
        except (JoseError, ValueError, TypeError):
            return None
        plaintext = result.plaintext
        return plaintext.decode("ascii", "replace") if plaintext else None
