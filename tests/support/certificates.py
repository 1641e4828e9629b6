"""Extra certificates from the dev CA, TLS configs and TLS clients (with or without a client certificate)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fastgw.tls.dev_certs import DevCertificates, issue
from tests.support.clients import Response, ResponseReader


def second_cert(certs: DevCertificates, name: str, *, client: bool = False) -> tuple[Path, Path]:
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
    cert, key = issue(ca, ca_key, name, dns=(name,), client=client)  # type: ignore[arg-type]
    cert_path = certs.ca_cert.parent / f"{name}.pem"
    key_path = certs.ca_cert.parent / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def tls_config(upstream_port: int, certificates: list[tuple[Path, Path]], extra: str = "") -> str:
    pairs = ", ".join(f'{{ cert = "{c}", key = "{k}" }}' for c, k in certificates)
    return f"""
        [[listeners]]
        bind = "127.0.0.1:{{port}}"
        tls = {{ certificates = [{pairs}] {extra} }}
        [access_log]
        target = "{{log}}"
        [upstreams.u]
        targets = ["127.0.0.1:{upstream_port}"]
        [[routes]]
        name = "r"
        path = "/"
        upstream = "u"
        auth = "none"
        """


def client_context(certs: DevCertificates, *, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    if client_cert:
        ctx.load_cert_chain(certs.client_cert, certs.client_key)
    return ctx


def fingerprint(cert_path: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)


def tls_request(
    port: int, certs: DevCertificates, client: tuple[Path, Path] | None, path: str, headers: str = ""
) -> Response:
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    if client is not None:
        ctx.load_cert_chain(*client)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n".encode())
        return ResponseReader(sock).read()  # type: ignore[arg-type]
