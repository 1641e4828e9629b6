"""mTLS consumers: a verified client certificate names the caller.

The listener has already verified the certificate against its CA bundle (and CRL); this policy only maps
it to a consumer, by SHA-256 fingerprint first, then by a subject alternative name, then by the subject
DN (RFC 4514 string), all exact. No certificate: 401; a certificate mapped to nobody: 403. The mapping
is config (compiled into dicts), so a check is at most three dict lookups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Phase

NO_CERTIFICATE = Denial(401, "unauthorized", "a client certificate is required", "mtls.missing")
UNMAPPED = Denial(403, "forbidden", "this client certificate is not mapped to a consumer", "mtls.unknown")


@dataclass(frozen=True, slots=True)
class CertIdentity:
    consumer: str
    consumer_id: str
    team: str
    roles: frozenset[str]
    scopes: frozenset[str]


def normalise_fingerprint(value: str) -> str:
    return value.replace(":", "").strip().lower()


class MtlsAuth:
    PHASE: ClassVar[Phase] = Phase.AUTHENTICATION

    def __init__(
        self,
        name: str,
        by_sha256: dict[str, CertIdentity],
        by_san: dict[str, CertIdentity],
        by_subject: dict[str, CertIdentity],
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
