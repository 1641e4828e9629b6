"""Client-side TLS, for upstream connections (and later JWKS, OIDC discovery and introspection).

Verification is on by default: the certificate must chain to the system store (or the configured CA
bundle) and match the server name, which is the target's host unless ``sni`` overrides it. ``verify =
false`` exists for labs and is reported by ``fastgw check``. A profile's ``key`` (every setting that
changes the handshake) is part of the upstream pool key, so two routes with different TLS identities
never share a connection.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass

from fastgw.tls.server import TlsConfigError


@dataclass(frozen=True, slots=True)
class ClientTls:
    context: ssl.SSLContext
    sni: str | None
    key: str  # stable digest of the settings, for the pool key

    def server_hostname(self, host: str) -> str:
        return self.sni or host


def build_client_tls(
    verify: bool, ca: str | None, sni: str | None, cert: str | None, key: str | None
) -> ClientTls:
    """Raises TlsConfigError naming the bad key."""
    if verify:
        try:
            ctx = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError("ca", f"cannot load {ca}: {exc}") from None
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if (cert is None) != (key is None):
        raise TlsConfigError("cert", "cert and key go together")
    if cert is not None and key is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError("cert", f"cannot load {cert} with {key}: {exc}") from None
    digest = hashlib.blake2b(repr((verify, ca, sni, cert, key)).encode(), digest_size=6).hexdigest()
    return ClientTls(context=ctx, sni=sni, key=digest)
