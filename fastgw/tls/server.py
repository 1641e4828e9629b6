"""Server-side TLS for listeners: contexts per certificate, SNI selection, profiles, client certificates.

Contexts are built when a Snapshot is compiled, so a reload reads renewed certificate files. The asyncio
server keeps the *front* context it was created with; its ``sni_callback`` switches every handshake to the
context of the Snapshot in force (chosen by server name, else the listener's first certificate), so a
reload changes the certificate served without dropping a connection.

Profiles follow Mozilla's server-side TLS guidelines: "intermediate" (TLS 1.2 and 1.3, AEAD ciphers with
forward secrecy only) and "modern" (TLS 1.3 only). Session resumption uses OpenSSL's session tickets,
whose keys are per process: a resumed session works against the same worker only.

One OpenSSL limit shapes the API: switching context in the SNI callback does not change the verify mode
fixed when the connection was created, so ``client_auth`` belongs to the listener and a change to it
takes a restart.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

# Mozilla "intermediate" TLS 1.2 suites (TLS 1.3 suites are all AEAD and fixed by OpenSSL).
# A listener certificate that ends sooner than this is a warning at check and at each reload: time to
# renew before clients refuse it.
EXPIRY_WARNING_DAYS: Final = 14
# A certificate issued moments ago by a CA that does not backdate may start a little after this host's
# clock: so much is allowed before "not valid yet".
CLOCK_SKEW_SECONDS: Final = 300
INTERMEDIATE_CIPHERS: Final = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    ]
)
ClientAuth = Literal["none", "optional", "required"]
Profile = Literal["intermediate", "modern"]


class TlsConfigError(ValueError):
    """A TLS setting that cannot be used; ``key`` is the config key it concerns (relative)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


@dataclass(frozen=True, slots=True)
class ListenerTls:
    """The compiled TLS of one listener: contexts by server name and the default."""

    default: ssl.SSLContext
    by_name: dict[str, ssl.SSLContext]
    wildcards: tuple[tuple[str, ssl.SSLContext], ...]
    client_auth: ClientAuth
    client_ca: str | None
    alpn: tuple[str, ...]
    crl: str | None = None
    warnings: tuple[str, ...] = field(default=())

    def select(self, server_name: str | None) -> ssl.SSLContext:
        if server_name:
            name = server_name.lower()
            ctx = self.by_name.get(name)
            if ctx is not None:
                return ctx
            for suffix, wild in self.wildcards:
                if name.endswith(suffix) and "." not in name[: -len(suffix)]:
                    return wild
        return self.default


def _context(
    profile: Profile,
    client_auth: ClientAuth,
    client_ca: str | None,
    crl: str | None,
    alpn: tuple[str, ...] = ("http/1.1",),
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if profile == "modern" else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(INTERMEDIATE_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(list(alpn))
    if client_auth != "none":
        if client_ca is None:
            raise TlsConfigError("client_ca", f'client_auth = "{client_auth}" needs a client_ca bundle')
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError("client_ca", f"cannot load {client_ca}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if client_auth == "required" else ssl.CERT_OPTIONAL
        if crl is not None:
            try:
                ctx.load_verify_locations(cafile=crl)
            except (OSError, ssl.SSLError) as exc:
                raise TlsConfigError("crl", f"cannot load {crl}: {exc}") from None
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def _names(cert_path: str, where: str, warnings: list[str]) -> list[str]:
    """DNS names a certificate serves (SANs, else its common name). Raises TlsConfigError (``where``)
    for a certificate out of its validity period: served, every verifying client would refuse it, and a
    reload is when the operator can still act; one that ends within EXPIRY_WARNING_DAYS is a warning."""
    # cryptography is imported where it is used: it adds ~8 MiB RSS that a plain-HTTP gateway need not pay.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    with open(cert_path, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc <= now:
        raise TlsConfigError(where, f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now + datetime.timedelta(seconds=CLOCK_SKEW_SECONDS):
        raise TlsConfigError(
            where, f"{cert_path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    left = cert.not_valid_after_utc - now
    if left < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        warnings.append(f"{where}: {cert_path} expires in {left.days} days")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return names


def _crl_warnings(path: str, warnings: list[str]) -> None:
    """A CRL past its nextUpdate fails every client-certificate handshake (OpenSSL: "CRL has expired")
    with nothing but the clients' errors to tell why: said at load (``fastgw check``, start, reload), and
    one that lapses within a day too, so a CRL that is not being renewed is noticed before it bites."""
    from cryptography import x509

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return  # loading it failed already, with its own error
    now = datetime.datetime.now(datetime.UTC)
    marker = b"-----BEGIN X509 CRL-----"
    for block in data.split(marker)[1:]:
        try:
            crl = x509.load_pem_x509_crl(marker + block)
        except ValueError:
            continue
        next_update = crl.next_update_utc
        issuer = crl.issuer.rfc4514_string()
        if next_update is None:
            continue
        if next_update <= now:
            warnings.append(
                f"crl: {path} ({issuer}) is past its nextUpdate, {next_update:%Y-%m-%d %H:%M} UTC: every"
                " client certificate it covers is refused until a fresh CRL is loaded (fastgw reload)"
            )
        elif next_update - now < datetime.timedelta(days=1):
            warnings.append(
                f"crl: {path} ({issuer}) lapses at {next_update:%Y-%m-%d %H:%M} UTC: renew it before then"
            )


def build_listener_tls(
    certificates: list[tuple[str, str]],
    profile: Profile,
    client_auth: ClientAuth,
    client_ca: str | None,
    crl: str | None,
    key_is_private: Callable[[str], bool],
    *,
    alpn: tuple[str, ...] = ("http/1.1",),
) -> ListenerTls:
    """Load every (certificate, key) pair of a listener. Raises TlsConfigError naming the bad key."""
    if not certificates:
        raise TlsConfigError("certificates", "at least one { cert, key } pair is required")
    by_name: dict[str, ssl.SSLContext] = {}
    wildcards: list[tuple[str, ssl.SSLContext]] = []
    default: ssl.SSLContext | None = None
    warnings: list[str] = []
    for i, (cert, key) in enumerate(certificates):
        ctx = _context(profile, client_auth, client_ca, crl, alpn)
        try:
            ctx.load_cert_chain(cert, key)
            names = _names(cert, f"certificates[{i}]", warnings)
        except TlsConfigError:
            raise
        except FileNotFoundError as exc:
            raise TlsConfigError(f"certificates[{i}]", f"no such file: {exc.filename}") from None
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsConfigError(f"certificates[{i}]", f"cannot load {cert} with {key}: {exc}") from None
        if not key_is_private(key):
            warnings.append(f"certificates[{i}].key: {key} is readable by group or others (chmod 600)")
        default = default or ctx
        for name in names:
            if name.startswith("*."):
                wildcards.append((name[1:], ctx))
            else:
                by_name.setdefault(name, ctx)
    assert default is not None
    if crl is not None and client_auth != "none":
        _crl_warnings(crl, warnings)
    return ListenerTls(
        default=default,
        by_name=by_name,
        wildcards=tuple(wildcards),
        client_auth=client_auth,
        client_ca=client_ca,
        alpn=alpn,
        crl=crl,
        warnings=tuple(warnings),
    )


def front_context(first: ListenerTls, current: Callable[[], ListenerTls | None]) -> ssl.SSLContext:
    """The context an asyncio server is created with: it hands every handshake to the context that the
    Snapshot in force selects for the client's server name."""
    # Verify mode and flags (the CRL check among them) are copied from this context into each connection
    # and survive the switch below, so they must be the listener's own.
    ctx = _context("intermediate", first.client_auth, first.client_ca, first.crl, first.alpn)
    # Load the default certificate too, so a client without SNI gets it even before the callback runs.
    ctx.minimum_version = first.default.minimum_version

    def pick(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        tls = current()
        if tls is not None:
            sslobj.context = tls.select(server_name)

    ctx.sni_callback = pick
    return ctx


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What the access log and later policies need from a verified client certificate."""

    subject: str
    sans: tuple[str, ...]
    sha256: str


def peer_certificate(der: bytes | None) -> PeerCertificate | None:
    if not der:
        return None
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = (
            tuple(str(v) for v in san.get_values_for_type(x509.DNSName))
            + tuple(str(v) for v in san.get_values_for_type(x509.IPAddress))
            + tuple(str(v) for v in san.get_values_for_type(x509.RFC822Name))
        )
    except x509.ExtensionNotFound:
        sans = ()
    return PeerCertificate(
        subject=cert.subject.rfc4514_string(), sans=sans, sha256=hashlib.sha256(der).hexdigest()
    )
