from __future__ import annotations

import socket
import struct

import pytest

from fastgw.codec.problem import CodecError
from fastgw.codec.proxy_protocol import V2_SIGNATURE, parse_proxy_header


def v2(family: int, addresses: bytes, command: int = 1) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(addresses)) + addresses


def test_v1_tcp4() -> None:
    raw = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\nGET"
    assert parse_proxy_header(raw) == (len(raw) - 3, "203.0.113.7")


def test_v1_tcp6_and_unknown() -> None:
    raw = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
    assert parse_proxy_header(raw) == (len(raw), "2001:db8::1")
    assert parse_proxy_header(b"PROXY UNKNOWN\r\n") == (15, None)


def test_v1_incomplete_then_complete() -> None:
    assert parse_proxy_header(b"PROXY TCP4 1.2") is None
    assert parse_proxy_header(b"PRO") is None


def test_v2_ipv4_and_ipv6_and_local() -> None:
    ipv4 = socket.inet_aton("198.51.100.9") + socket.inet_aton("10.0.0.1") + struct.pack("!HH", 1, 2)
    raw = v2(0x11, ipv4)
    assert parse_proxy_header(raw + b"GET") == (len(raw), "198.51.100.9")
    ipv6 = socket.inet_pton(socket.AF_INET6, "2001:db8::5") + bytes(16) + struct.pack("!HH", 1, 2)
    assert parse_proxy_header(v2(0x21, ipv6)) == (16 + 36, "2001:db8::5")
    assert parse_proxy_header(v2(0x00, b"", command=0)) == (16, None)
    assert parse_proxy_header(v2(0x11, ipv4)[:20]) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 1.2.3.4\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
        b"PROXY TCP4 not-an-ip 5.6.7.8 1 1\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 1\r\n",
        b"PROXY " + b"A" * 200,
        V2_SIGNATURE + bytes([0x31, 0x11, 0, 0]),
    ],
)
def test_refused(raw: bytes) -> None:
    with pytest.raises(CodecError):
        parse_proxy_header(raw)
