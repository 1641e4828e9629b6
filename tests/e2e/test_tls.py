"""TLS termination with real handshakes and certificates made in the test."""

from __future__ import annotations

import datetime
import hashlib
import signal
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fastgw.tls.dev_certs import DevCertificates, issue, write_dev_certificates
from tests.support.certificates import client_context, second_cert, tls_config
from tests.support.clients import ResponseReader
from tests.support.gateways import Gateway
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until


@pytest.fixture
def certs(tmp_path: Path) -> DevCertificates:
    return write_dev_certificates(tmp_path / "certs")


def https_get(
    port: int, ctx: ssl.SSLContext, server_name: str | None = "localhost", path: str = "/"
) -> tuple[int, bytes]:
    """One request over TLS; returns (status, DER certificate the server presented)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=server_name) as sock:
        der = sock.getpeercert(binary_form=True) or b""
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        resp = ResponseReader(sock).read()  # type: ignore[arg-type]
    return resp.status, der


def common_name(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value)


def test_https_proxying_and_forwarded_proto(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, certs: DevCertificates
) -> None:
    gw = gateway_factory(tls_config(upstream.port, [(certs.server_cert, certs.server_key)]))
    status, der = https_get(gw.port, client_context(certs))
    assert status == 200
    assert common_name(der) == "localhost"
    assert upstream.requests[-1].header(b"x-forwarded-proto") == b"https"


def test_sni_selects_the_certificate(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, certs: DevCertificates
) -> None:
    api = second_cert(certs, "api.example.test")
    gw = gateway_factory(tls_config(upstream.port, [(certs.server_cert, certs.server_key), api]))
    ctx = client_context(certs)
    assert common_name(https_get(gw.port, ctx, "api.example.test")[1]) == "api.example.test"
    assert common_name(https_get(gw.port, ctx, "localhost")[1]) == "localhost"
    no_sni = ssl.create_default_context(cafile=str(certs.ca_cert))
    no_sni.check_hostname = False
    assert common_name(https_get(gw.port, no_sni, None)[1]) == "localhost"  # the first is the default


@pytest.mark.parametrize(
    ("profile", "client_max"), [("intermediate", ssl.TLSVersion.TLSv1_1), ("modern", ssl.TLSVersion.TLSv1_2)]
)
def test_old_protocols_are_refused(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    certs: DevCertificates,
    profile: str,
    client_max: ssl.TLSVersion,
) -> None:
    gw = gateway_factory(
        tls_config(upstream.port, [(certs.server_cert, certs.server_key)], f', profile = "{profile}"')
    )
    with warnings.catch_warnings():  # this client offers deprecated versions on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(certs.ca_cert)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = client_max
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as info:
        https_get(gw.port, ctx)
    # The server ended the handshake (an alert or, with uvloop, a close): our client did not refuse locally.
    assert "NO_PROTOCOLS_AVAILABLE" not in str(info.value).upper()
    line = wait_until(
        lambda: [ln for ln in gw.stderr().splitlines() if "TLS handshake" in ln], 5, "a log line"
    )[0]
    assert "failed" in line and "127.0.0.1" in line and "PROTOCOL" in line.upper()
    # One version up, the same listener accepts.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ok = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ok.load_verify_locations(certs.ca_cert)
        ok.minimum_version = ok.maximum_version = ssl.TLSVersion(client_max + 1)
    assert https_get(gw.port, ok)[0] == 200


def test_client_certificate_required(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, certs: DevCertificates
) -> None:
    gw = gateway_factory(
        tls_config(
            upstream.port,
            [(certs.server_cert, certs.server_key)],
            f', client_auth = "required", client_ca = "{certs.ca_cert}"',
        )
    )
    with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError)):
        https_get(gw.port, client_context(certs))  # TLS 1.3: the refusal arrives on first read
    line = wait_until(
        lambda: [ln for ln in gw.stderr().splitlines() if "TLS handshake" in ln], 5, "a log line"
    )[0]
    assert "CERTIFICATE" in line.upper(), line  # e.g. PEER_DID_NOT_RETURN_A_CERTIFICATE
    status, _ = https_get(gw.port, client_context(certs, client_cert=True), path="/mtls")
    assert status == 200
    record = wait_until(lambda: [r for r in gw.log_records() if r.get("path") == "/mtls"], 5, "the log line")[
        0
    ]
    der = x509.load_pem_x509_certificate(certs.client_cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert record["client_cert"]["sha256"] == hashlib.sha256(der).hexdigest()
    assert "CN=fastgw dev client" in record["client_cert"]["subject"]
    assert upstream.requests == [upstream.requests[-1]]  # the refused handshake never reached it


def test_client_certificate_optional(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, certs: DevCertificates
) -> None:
    gw = gateway_factory(
        tls_config(
            upstream.port,
            [(certs.server_cert, certs.server_key)],
            f', client_auth = "optional", client_ca = "{certs.ca_cert}"',
        )
    )
    assert https_get(gw.port, client_context(certs), path="/anon")[0] == 200
    assert https_get(gw.port, client_context(certs, client_cert=True), path="/known")[0] == 200
    records = {r["path"]: r for r in gw.wait_log(2)}
    assert "client_cert" not in records["/anon"]
    assert records["/known"]["client_cert"]["sha256"]


def test_renewed_certificate_is_served_after_reload(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, certs: DevCertificates
) -> None:
    gw = gateway_factory(tls_config(upstream.port, [(certs.server_cert, certs.server_key)]))
    ctx = client_context(certs)
    before = https_get(gw.port, ctx)[1]
    renewed_cert, renewed_key = second_cert(certs, "localhost")
    certs.server_cert.write_bytes(renewed_cert.read_bytes())
    certs.server_key.write_bytes(renewed_key.read_bytes())
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload (SIGHUP) complete" in gw.stderr(), 5, "the reload")
    after = https_get(gw.port, ctx)[1]
    assert after != before
    assert after == x509.load_pem_x509_certificate(renewed_cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


def test_tls_config_errors_and_key_permission_warning(tmp_path: Path, certs: DevCertificates) -> None:
    def check(text: str) -> subprocess.CompletedProcess[str]:
        cfg = tmp_path / "tls.toml"
        cfg.write_text(text)
        return subprocess.run(
            [sys.executable, "-m", "fastgw", "check", str(cfg)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )

    base = """
[[listeners]]
bind = "127.0.0.1:8443"
tls = {{ certificates = [{{ cert = "{cert}", key = "{key}" }}] {extra} }}
[upstreams.u]
targets = ["127.0.0.1:9"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "none"
"""
    out = check(base.format(cert="missing.pem", key=certs.server_key, extra=""))
    assert out.returncode == 2
    assert "listeners[0].tls.certificates[0]: no such file" in out.stderr
    out = check(base.format(cert=certs.server_cert, key=certs.server_key, extra=', client_auth = "required"'))
    assert out.returncode == 2 and "listeners[0].tls.client_ca:" in out.stderr
    certs.server_key.chmod(0o644)
    out = check(base.format(cert=certs.server_cert, key=certs.server_key, extra=""))
    assert out.returncode == 0
    assert "warning: listeners[0].tls.certificates[0].key" in out.stdout and "chmod 600" in out.stdout
    # A certificate out of its validity period is refused (it was loaded, and served to clients that all
    # refuse it); one ending within EXPIRY_WARNING_DAYS is a warning.
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
    for name, start, days, expected in (
        ("expired", -10, 1, "expired on"),
        ("early", 2, 30, "is not valid before"),
        ("ending", -1, 5, "expires in"),
    ):
        began = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=start)
        leaf, leaf_key = issue(ca, ca_key, "localhost", dns=("localhost",), not_before=began, days=days)  # type: ignore[arg-type]
        cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}-key.pem"
        cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            leaf_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        out = check(base.format(cert=cert_path, key=key_path, extra=""))
        if name == "ending":
            assert out.returncode == 0 and f"certificates[0]: {cert_path} expires in" in out.stdout, (
                out.stdout
            )
        else:
            assert (
                out.returncode == 2
                and f"listeners[0].tls.certificates[0]: {cert_path} {expected}" in out.stderr
            )


def test_cert_dev_command(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fastgw", "cert", "dev", "--dir", str(tmp_path / "d")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "curl --cacert" in out.stdout
    assert (tmp_path / "d" / "server-key.pem").stat().st_mode & 0o077 == 0
    ctx = ssl.create_default_context(cafile=str(tmp_path / "d" / "ca.pem"))
    ctx.load_cert_chain(tmp_path / "d" / "client.pem", tmp_path / "d" / "client-key.pem")


def write_crl(certs: DevCertificates, next_update: datetime.timedelta) -> Path:
    """A CRL of the dev CA revoking the dev client certificate, its nextUpdate ``next_update`` from now."""
    from cryptography.hazmat.primitives import hashes

    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
    revoked = x509.load_pem_x509_certificate(certs.client_cert.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(min(now, now + next_update) - datetime.timedelta(minutes=5))
        .next_update(now + next_update)
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(revoked.serial_number).revocation_date(now).build()
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    crl_path = certs.ca_cert.parent / "crl.pem"
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return crl_path


@pytest.mark.parametrize(
    ("next_update", "warned"),
    [
        (datetime.timedelta(hours=-1), "is past its nextUpdate"),
        (datetime.timedelta(hours=3), "lapses at"),
        (datetime.timedelta(days=7), ""),
    ],
)
def test_a_crl_past_or_near_its_next_update_is_warned_about_at_load(
    certs: DevCertificates, upstream: TestUpstream, next_update: datetime.timedelta, warned: str
) -> None:
    """Past its nextUpdate, OpenSSL refuses every client certificate the CRL covers ("CRL has expired"):
    the only sign was each client's failed handshake. Now `fastgw check`, a start and a reload say so."""
    from fastgw.config.compiler import compile_config

    crl_path = write_crl(certs, next_update)
    config = tls_config(
        upstream.port,
        [(certs.server_cert, certs.server_key)],
        f', client_auth = "required", client_ca = "{certs.ca_cert}", crl = "{crl_path}"',
    )
    snapshot = compile_config(
        config.replace("{port}", "8443").encode(), str(certs.ca_cert.parent / "gw.toml")
    )
    found = [w for w in snapshot.warnings if "crl:" in w]
    if warned:
        assert len(found) == 1 and warned in found[0] and found[0].startswith("listeners[0].tls.crl: ")
    else:
        assert found == []


def test_revoked_client_certificate_is_refused(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, certs: DevCertificates
) -> None:
    crl_path = write_crl(certs, datetime.timedelta(days=1))
    good_cert, good_key = second_cert(certs, "good-client", client=True)
    gw = gateway_factory(
        tls_config(
            upstream.port,
            [(certs.server_cert, certs.server_key)],
            f', client_auth = "required", client_ca = "{certs.ca_cert}", crl = "{crl_path}"',
        )
    )
    with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError)):
        https_get(gw.port, client_context(certs, client_cert=True), path="/revoked")
    line = wait_until(
        lambda: [ln for ln in gw.stderr().splitlines() if "TLS handshake" in ln], 5, "a log line"
    )[0]
    assert "REVOKED" in line.upper() or "CERTIFICATE" in line.upper(), line
    ok = ssl.create_default_context(cafile=str(certs.ca_cert))
    ok.load_cert_chain(good_cert, good_key)
    assert https_get(gw.port, ok, path="/fine")[0] == 200
    assert [r.target for r in upstream.requests] == [b"/fine"]


def test_non_aead_ciphers_are_refused(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, certs: DevCertificates
) -> None:
    gw = gateway_factory(tls_config(upstream.port, [(certs.server_cert, certs.server_key)]))
    cbc_only = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cbc_only.load_verify_locations(certs.ca_cert)
    cbc_only.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.3 suites are all AEAD
    cbc_only.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256")
    with pytest.raises(ssl.SSLError):
        https_get(gw.port, cbc_only)
    line = wait_until(
        lambda: [ln for ln in gw.stderr().splitlines() if "TLS handshake" in ln], 5, "a log line"
    )[0]
    assert "CIPHER" in line.upper(), line  # NO_SHARED_CIPHER
    aead = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    aead.load_verify_locations(certs.ca_cert)
    aead.maximum_version = ssl.TLSVersion.TLSv1_2
    aead.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert https_get(gw.port, aead)[0] == 200


def test_session_resumption_and_reload_keep_connections(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, certs: DevCertificates
) -> None:
    gw = gateway_factory(tls_config(upstream.port, [(certs.server_cert, certs.server_key)]))
    ctx = client_context(certs)
    # A keep-alive connection opened before a reload keeps working after it.
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    kept = ctx.wrap_socket(raw, server_hostname="localhost")
    reader = ResponseReader(kept)  # type: ignore[arg-type]
    kept.sendall(b"GET /before HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reader.read().status == 200
    session = kept.session  # TLS 1.3 tickets arrive after the handshake; one response read is enough
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload (SIGHUP) complete" in gw.stderr(), 5, "the reload")
    kept.sendall(b"GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reader.read().status == 200
    kept.close()
    # The ticket from the first connection resumes a new one (one worker, so the ticket keys match).
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as again:
        again.sendall(b"GET /resumed HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert ResponseReader(again).read().status == 200  # type: ignore[arg-type]
        assert again.session_reused
