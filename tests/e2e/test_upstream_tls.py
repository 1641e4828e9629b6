"""TLS to upstreams: verified by default, custom CA, SNI, client certificates, explicit verify = false."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fastgw.tls.dev_certs import DevCertificates, write_dev_certificates
from tests.support.clients import get
from tests.support.gateways import Gateway
from tests.support.upstreams import TestUpstream


@pytest.fixture
def certs(tmp_path: Path) -> DevCertificates:
    return write_dev_certificates(tmp_path / "certs")


def tls_upstream(
    certs: DevCertificates, *, require_client_cert: bool = False
) -> tuple[TestUpstream, list[str]]:
    seen_sni: list[str] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    ctx.sni_callback = lambda _obj, name, _ctx: seen_sni.append(name or "")  # type: ignore[func-returns-value]
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs.ca_cert)
    return TestUpstream(ssl_context=ctx), seen_sni


@pytest.fixture
def secure_upstream(certs: DevCertificates) -> Iterator[tuple[TestUpstream, list[str]]]:
    server, sni = tls_upstream(certs)
    yield server, sni
    server.close()


def config(port: int, tls: str) -> str:
    return f"""
        [[listeners]]
        bind = "127.0.0.1:{{port}}"
        [access_log]
        target = "{{log}}"
        [upstreams.u]
        targets = ["127.0.0.1:{port}"]
        tls = {{ {tls} }}
        [[routes]]
        name = "r"
        path = "/"
        upstream = "u"
        auth = "none"
        """


def test_verified_with_custom_ca_and_sni(
    gateway_factory: Callable[..., Gateway],
    secure_upstream: tuple[TestUpstream, list[str]],
    certs: DevCertificates,
) -> None:
    server, sni = secure_upstream
    gw = gateway_factory(config(server.port, f'ca = "{certs.ca_cert}", sni = "localhost"'))
    assert get(gw.port, "/secure").status == 200
    assert server.requests[-1].target == b"/secure"
    assert sni == ["localhost"]


def test_untrusted_upstream_is_502_with_a_clear_detail(
    gateway_factory: Callable[..., Gateway], secure_upstream: tuple[TestUpstream, list[str]]
) -> None:
    server, _ = secure_upstream
    gw = gateway_factory(config(server.port, "verify = true"))  # the system store does not know our dev CA
    resp = get(gw.port, "/")
    assert resp.status == 502
    assert resp.json()["type"].endswith("/upstream-tls")
    assert resp.json()["detail"] == "the upstream service's TLS certificate could not be verified"
    assert "TLS verification of 127.0.0.1" in gw.wait_log(1)[0]["error"]
    assert server.requests == []


def test_wrong_name_is_refused(
    gateway_factory: Callable[..., Gateway],
    secure_upstream: tuple[TestUpstream, list[str]],
    certs: DevCertificates,
) -> None:
    server, _ = secure_upstream
    gw = gateway_factory(config(server.port, f'ca = "{certs.ca_cert}", sni = "other.example"'))
    resp = get(gw.port, "/")
    assert resp.status == 502 and "other.example" not in resp.json()["detail"]
    assert "other.example" in gw.wait_log(1)[0]["error"]


def test_client_certificate_presented_to_upstream(
    gateway_factory: Callable[..., Gateway], certs: DevCertificates
) -> None:
    server, _ = tls_upstream(certs, require_client_cert=True)
    try:
        without = gateway_factory(config(server.port, f'ca = "{certs.ca_cert}"'))
        assert get(without.port, "/").status == 502
        with_cert = gateway_factory(
            config(
                server.port,
                f'ca = "{certs.ca_cert}", cert = "{certs.client_cert}", key = "{certs.client_key}"',
            )
        )
        assert get(with_cert.port, "/mtls").status == 200
        assert server.requests[-1].target == b"/mtls"
    finally:
        server.close()


def test_verify_false_works_and_is_reported(
    gateway_factory: Callable[..., Gateway], secure_upstream: tuple[TestUpstream, list[str]], tmp_path: Path
) -> None:
    server, _ = secure_upstream
    gw = gateway_factory(config(server.port, "verify = false"))
    assert get(gw.port, "/").status == 200
    out = subprocess.run(
        [sys.executable, "-m", "fastgw", "check", str(gw.config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert "upstreams.u.tls.verify = false" in out.stdout
