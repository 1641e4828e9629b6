"""mTLS consumers and certificate-bound JWTs (RFC 8705) over real TLS connections."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastgw.tls.dev_certs import write_dev_certificates
from tests.support.certificates import fingerprint, second_cert, tls_config, tls_request
from tests.support.gateways import Gateway
from tests.support.upstreams import TestUpstream

ISS = "https://idp.example.test/"


def test_client_certificates_map_to_consumers_and_bind_tokens(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    certs = write_dev_certificates(tmp_path / "certs")
    der = fingerprint(certs.client_cert)
    sha = hashlib.sha256(der).hexdigest()
    colons = ":".join(sha[i : i + 2] for i in range(0, 64, 2)).upper()
    other = second_cert(certs, "unmapped.client.test", client=True)
    idp = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "idp.pem"
    pem.write_bytes(
        idp.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = (
        tls_config(
            upstream.port,
            [(certs.server_cert, certs.server_key)],
            f', client_auth = "optional", client_ca = "{certs.ca_cert}"',
        ).replace('auth = "none"', 'auth = "mtls"')
        + f"""
        [[routes]]
        name = "bound"
        path = "/bound"
        upstream = "u"
        auth = "jwt"

        [[mtls.consumers]]
        consumer = "billing"
        sha256 = "{colons}"
        team = "finance"
        scopes = ["invoices:read"]

        [jwt.issuers.idp]
        issuer = "{ISS}"
        audiences = []
        algorithms = ["ES256"]
        public_keys = ["{pem}"]
        require_cert_binding = true
        """
    )
    gw = gateway_factory(config)
    client = (certs.client_cert, certs.client_key)
    ok = tls_request(gw.port, certs, client, "/x")
    assert ok.status == 200
    seen = upstream.requests[-1]
    assert seen.header(b"x-consumer") == b"billing" and seen.header(b"x-consumer-team") == b"finance"
    missing = tls_request(gw.port, certs, None, "/x")
    assert (
        missing.status == 401 and missing.header(b"www-authenticate") == b'ClientCertificate realm="fastgw"'
    )
    assert missing.header(b"strict-transport-security") == b"max-age=31536000"  # a TLS listener
    assert tls_request(gw.port, certs, other, "/x").status == 403  # valid, but mapped to nobody

    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    base = {"iss": ISS, "sub": "svc", "exp": int(time.time()) + 60}
    bound = jwt.encode({**base, "cnf": {"x5t#S256": thumbprint}}, idp, algorithm="ES256")
    header = f"Authorization: Bearer {bound}\r\n"
    assert tls_request(gw.port, certs, client, "/bound/a", header).status == 200
    assert tls_request(gw.port, certs, other, "/bound/a", header).status == 401  # stolen token, other cert
    assert tls_request(gw.port, certs, None, "/bound/a", header).status == 401  # stolen token, no cert
    unbound = jwt.encode(base, idp, algorithm="ES256")
    assert (
        tls_request(gw.port, certs, client, "/bound/a", f"Authorization: Bearer {unbound}\r\n").status == 401
    )
    denials = {r.get("denial") for r in gw.wait_log(7)}
    assert {"mtls.missing", "mtls.unknown", "jwt.cert_binding", "jwt.claims"} <= denials
