"""mTLS consumers: a verified client certificate names the caller.

The listener has already verified the certificate against its CA bundle (and CRL); this policy only maps
it to a consumer, by SHA-256 fingerprint first, then by a subject alternative name, then by the subject
DN (RFC 4514 string), all exact. No certificate: 401; a certificate mapped to nobody: 403. The mapping
is config (compiled into dicts), so a check is at most three dict lookups.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Phase
from fastgw.policy.rbac import Principal

# RFC 9110 11.6.1: a 401 must carry a challenge. No scheme is registered for TLS client certificates;
# this one names what is wanted (the client must reconnect presenting a certificate).
NO_CERTIFICATE = Denial(
    401,
    "unauthorized",
    "a client certificate is required",
    "mtls.missing",
    ((b"www-authenticate", b'ClientCertificate realm="fastgw"'),),
)
UNMAPPED = Denial(403, "forbidden", "this client certificate is not mapped to a consumer", "mtls.unknown")


def normalise_fingerprint(value: str) -> str:
    return value.replace(":", "").strip().lower()


class MtlsAuth:
    PHASE: ClassVar[Phase] = Phase.AUTHENTICATION

    def __init__(
        self,
        name: str,
        by_sha256: dict[str, Principal],
        by_san: dict[str, Principal],
        by_subject: dict[str, Principal],
        shadow: bool,
    ) -> None:
        self.name = name
        self.by_sha256 = by_sha256
        self.by_san = by_san
        self.by_subject = by_subject
        self.shadow = shadow

    def check(self, ex: Exchange) -> Denial | None:
        cert: Any = ex.client_cert
        if cert is None:
            return NO_CERTIFICATE
        identity = self.by_sha256.get(cert.sha256)
        if identity is None:
            for san in cert.sans:
                identity = self.by_san.get(san)
                if identity is not None:
                    break
            else:
                identity = self.by_subject.get(cert.subject)
        if identity is None:
            return UNMAPPED
        ex.consumer = identity
        return None
