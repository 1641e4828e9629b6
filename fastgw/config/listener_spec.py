"""The [[listeners]] tables: where clients connect, and the TLS each listener terminates.

Part of the schema (config/schema.py re-exports them); apart so the schema stays readable. Compiled by
config/compiler.py and config/sections.py ``listener_tls``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastgw.config.fields import BACKLOG_MAX, doc


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateSpec:
    cert: str = doc("PEM certificate chain file (relative paths are relative to the config file)", ...)
    key: str = doc("PEM private key file; should not be readable by group or others", ...)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSpec:
    certificates: tuple[CertificateSpec, ...] = doc(
        "{ cert, key } pairs; chosen by SNI, the first is the default", ...
    )
    profile: Literal["intermediate", "modern"] = doc(
        "Mozilla profile: TLS 1.2+1.3 AEAD, or TLS 1.3 only", "intermediate"
    )
    client_auth: Literal["none", "optional", "required"] = doc("ask clients for a certificate (mTLS)", "none")
    client_ca: str | None = doc("PEM bundle of CAs that client certificates must chain to", None)
    crl: str | None = doc("PEM certificate revocation list checked for client certificates", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerSpec:
    bind: str = doc("address:port to listen on, e.g. 127.0.0.1:8080 or [::1]:8080", ...)
    name: str = doc("listener name used in logs", "public")
    proxy_protocol: bool = doc("require a PROXY protocol v1/v2 header on every connection", False)
    backlog: int = doc("listen(2) backlog", 2048, most=BACKLOG_MAX)
    tls: TlsSpec | None = doc("terminate TLS on this listener (a table, see listeners.tls)", None)
