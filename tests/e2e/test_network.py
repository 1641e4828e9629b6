"""Network rules (IP allow/deny, shadow mode), trusted proxies and PROXY protocol, end to end."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

from fastgw.codec.proxy_protocol import V2_SIGNATURE
from tests.support.clients import ResponseReader, connect, get
from tests.support.gateways import Gateway
from tests.support.upstreams import TestUpstream


def config(
    upstream_port: int, *, network: str = "", route: str = "", server: str = "", listener: str = ""
) -> str:
    return f"""
        [server]
        {server}
        [[listeners]]
        bind = "127.0.0.1:{{port}}"
        {listener}
        [access_log]
        target = "{{log}}"
        [network]
        {network}
        [upstreams.u]
        targets = ["127.0.0.1:{upstream_port}"]
        [[routes]]
        name = "open"
        path = "/open"
        upstream = "u"
        auth = "none"
        [[routes]]
        name = "guarded"
        path = "/guarded"
        upstream = "u"
        auth = "none"
        {route}
        """


def test_global_deny_is_403_problem(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(config(upstream.port, network='deny = ["127.0.0.0/8"]'))
    resp = get(gw.port, "/open")
    assert resp.status == 403
    assert resp.json()["detail"] == "client address is denied"
    assert upstream.requests == []
    assert gw.wait_log(1)[0]["denial"] == "network.deny"


def test_route_allow_list(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(config(upstream.port, route='network.allow = ["10.0.0.0/8", "2001:db8::/32"]'))
    assert get(gw.port, "/open").status == 200
    assert get(gw.port, "/guarded").status == 403


def test_shadow_mode_logs_and_passes(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(
        config(upstream.port, route='network = { deny = ["127.0.0.1/32"], mode = "shadow" }')
    )
    assert get(gw.port, "/guarded").status == 200
    record = gw.wait_log(1)[0]
    assert record["status"] == 200
    assert record["shadow"] == ["route_network.deny"]


def test_untrusted_peer_cannot_choose_its_address(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(config(upstream.port, route='network.allow = ["203.0.113.0/24"]'))
    resp = get(gw.port, "/guarded", "X-Forwarded-For: 203.0.113.9\r\n")
    assert resp.status == 403


def test_trusted_proxy_forwarded_for_is_believed(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(
        config(
            upstream.port,
            server='trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]',
            route='network.allow = ["203.0.113.0/24"]',
        )
    )
    # Right-most untrusted entry wins: 198.51.100.1 was written by a client we cannot trust.
    resp = get(gw.port, "/guarded", "X-Forwarded-For: 198.51.100.1, 203.0.113.9, 10.1.1.1\r\n")
    assert resp.status == 200
    seen = upstream.requests[-1]
    assert seen.header(b"x-forwarded-for") == b"198.51.100.1, 203.0.113.9, 10.1.1.1, 127.0.0.1"
    assert gw.wait_log(1)[0]["client"] == "203.0.113.9"
    assert get(gw.port, "/guarded", "X-Forwarded-For: 203.0.113.9, 8.8.8.8\r\n").status == 403


def test_trusted_proxy_forwarded_proto_and_host_are_kept_once(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(config(upstream.port, server='trusted_proxies = ["127.0.0.1/32"]'))
    forwarded = "X-Forwarded-Proto: https\r\nX-Forwarded-Host: api.example\r\n"
    assert get(gw.port, "/open", forwarded).status == 200
    seen = upstream.requests[-1]
    assert seen.all(b"x-forwarded-proto") == [b"https"]
    assert seen.all(b"x-forwarded-host") == [b"api.example"]
    # Named in Connection, they are hop-by-hop: dropped, and ours take their place.
    headers = "Connection: X-Forwarded-Proto\r\nX-Forwarded-Proto: https\r\n"
    assert get(gw.port, "/open", headers).status == 200
    seen = upstream.requests[-1]
    assert seen.all(b"x-forwarded-proto") == [b"http"]
    assert seen.all(b"x-forwarded-host") == [b"test"]


def test_proxy_protocol_v1_and_v2(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(
        config(
            upstream.port,
            listener="proxy_protocol = true",
            route='network.allow = ["192.0.2.0/24", "2001:db8::/32"]',
        )
    )
    with connect(gw.port) as sock:
        sock.sendall(b"PROXY TCP4 192.0.2.10 10.0.0.1 40000 80\r\nGET /guarded HTTP/1.1\r\nHost: t\r\n\r\n")
        assert ResponseReader(sock).read().status == 200
    assert upstream.requests[-1].header(b"x-forwarded-for") == b"192.0.2.10"
    with connect(gw.port) as sock:
        sock.sendall(b"PROXY TCP4 198.51.100.1 10.0.0.1 40000 80\r\nGET /guarded HTTP/1.1\r\nHost: t\r\n\r\n")
        assert ResponseReader(sock).read().status == 403
    addresses = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + bytes(16) + struct.pack("!HH", 1, 80)
    header = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21, len(addresses)) + addresses
    with connect(gw.port) as sock:
        sock.sendall(header[:10])  # split across reads
        sock.sendall(header[10:] + b"GET /guarded HTTP/1.1\r\nHost: t\r\n\r\n")
        assert ResponseReader(sock).read().status == 200


def test_proxy_protocol_required_when_enabled(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(config(upstream.port, listener="proxy_protocol = true"))
    with connect(gw.port) as sock:
        sock.sendall(b"GET /open HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = ResponseReader(sock)
        assert reader.read().status == 400
        assert reader.closed()
    assert upstream.requests == []
