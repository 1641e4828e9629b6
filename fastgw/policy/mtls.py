"""mTLS consumers: a verified client certificate names the caller.

The listener has already verified the certificate against its CA bundle (and CRL); this policy only maps
it to a consumer, by SHA-256 fingerprint first, then by a subject alternative name, then by the subject
DN (RFC 4514 string), all exact. No certificate: 401; a certificate mapped to nobody: 403. The mapping
is config (compiled into dicts), so a check is at most three dict lookups. A mapping may list the llm
models its consumer may use (``models``, see model_grants.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from fastgw.config.context import CompileContext
from fastgw.config.fields import Section, doc
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Phase
from fastgw.policy.rbac import Principal


@dataclass(frozen=True, slots=True, kw_only=True)
class CertConsumerSpec:
    consumer: str = doc("the consumer this certificate authenticates as", ...)
    sha256: str | None = doc("certificate SHA-256 fingerprint (hex, colons allowed)", None)
    san: str | None = doc("a subject alternative name (DNS, IP or email) of the certificate", None)
    subject: str | None = doc("the subject DN as an RFC 4514 string, e.g. 'CN=billing,O=Corp'", None)
    team: str = doc("the consumer's team", "")
    roles: tuple[str, ...] = doc("the consumer's roles", ())
    scopes: tuple[str, ...] = doc("the consumer's scopes", ())
    models: tuple[str, ...] | None = doc(
        "llm models (glob patterns, e.g. ['gpt-4o*']) this consumer may use; absent: every model the route"
        " serves",
        None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MtlsSpec:
    consumers: tuple[CertConsumerSpec, ...] = doc("[[mtls.consumers]]: certificate -> consumer mappings", ...)
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: a failed check is logged and counted, the request goes on as anonymous", "enforce"
    )


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


def compile(spec: MtlsSpec | None, ctx: CompileContext) -> None:
    """[mtls]: certificates (by SHA-256, SAN or subject) mapped to consumers; auth = "mtls"."""
    if spec is None:
        return
    tables: dict[str, dict[str, Principal]] = {"sha256": {}, "san": {}, "subject": {}}
    for i, c in enumerate(spec.consumers):
        key = f"mtls.consumers[{i}]"
        given = [(kind, getattr(c, kind)) for kind in ("sha256", "san", "subject") if getattr(c, kind)]
        if len(given) != 1:
            raise ctx.error(key, "name exactly one of sha256, san or subject")
        kind, value = given[0]
        if kind == "sha256":
            value = normalise_fingerprint(value)
            if not re.fullmatch(r"[0-9a-f]{64}", value):
                raise ctx.error(f"{key}.sha256", "must be 64 hex digits (colons allowed)")
        if value in tables[kind]:
            raise ctx.error(f"{key}.{kind}", f"{value!r} is mapped twice")
        if not c.consumer:
            raise ctx.error(f"{key}.consumer", "must not be empty")
        if c.models is not None and not all(m.strip() for m in c.models):
            raise ctx.error(f"{key}.models", "a model pattern must not be empty")
        tables[kind][value] = Principal(
            consumer=c.consumer,
            consumer_id=c.consumer,
            team=c.team,
            roles=frozenset(c.roles),
            scopes=frozenset(c.scopes),
            models=c.models,
        )
    if not ctx.listener_client_auth:
        raise ctx.error("mtls", "no listener asks for client certificates (listeners.tls.client_auth)")
    shadow = spec.mode == "shadow"
    ctx.auth["mtls"] = MtlsAuth("mtls", tables["sha256"], tables["san"], tables["subject"], shadow)


# [mtls] in the schema and the reference (policy/registry.py declares it).
SECTION = Section(
    MtlsSpec,
    "[mtls] client certificates as consumers (needed by auth = 'mtls')",
    "optional",
    (
        ("[mtls]", MtlsSpec, "Client certificates as consumers (routes with auth = 'mtls')."),
        ("mtls.consumers", CertConsumerSpec, "Certificate -> consumer (one of sha256, san, subject)."),
    ),
)
