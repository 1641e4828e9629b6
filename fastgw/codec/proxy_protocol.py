"""PROXY protocol v1 (text) and v2 (binary) headers, as sent by HAProxy and cloud load balancers.

On a listener with ``proxy_protocol = true`` the first bytes of every connection must be a PROXY header;
the client address it carries replaces the socket peer for network rules and forwarding headers. A
connection without a valid header is refused: accepting both would let any client forge its address.
Spec: haproxy.org "The PROXY protocol" versions 1 and 2.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from fastgw.codec.problem import CodecError

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_MAX: Final = 107  # the spec's worst case line length, CRLF included
_V2_FAMILY_LEN: Final = {0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36}


def _bad(detail: str) -> CodecError:
    return CodecError(400, "bad-proxy-protocol", detail)


def parse_proxy_header(buf: bytes) -> tuple[int, str | None] | None:
    """Parse a PROXY header at the start of ``buf``.

    Returns ``None`` if more bytes are needed, else ``(consumed, client_ip)``; ``client_ip`` is ``None``
    for ``LOCAL``/``UNKNOWN`` headers (health checks from the balancer itself: keep the socket peer).

    Raises:
        CodecError: the bytes are not a PROXY header, or it is malformed.
    """
    if buf[:1] == b"P":
        if not b"PROXY "[: len(buf)] == buf[:6]:
            raise _bad("connection does not start with a PROXY protocol header")
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= _V1_MAX:
                raise _bad("PROXY v1 line too long")
            return None
        return end + 2, _parse_v1(buf[:end])
    if buf[:1] == b"\r":
        if V2_SIGNATURE[: len(buf)] != buf[:12]:
            raise _bad("connection does not start with a PROXY protocol header")
        if len(buf) < 16:
            return None
        ver_cmd, family, length = struct.unpack_from("!BBH", buf, 12)
        if ver_cmd >> 4 != 2:
            raise _bad("unsupported PROXY protocol version")
        if len(buf) < 16 + length:
            return None
        consumed = 16 + length
        command = ver_cmd & 0x0F
        if command == 0:  # LOCAL
            return consumed, None
        if command != 1:
            raise _bad("unknown PROXY v2 command")
        need = _V2_FAMILY_LEN.get(family)
        if need is None:
            return consumed, None  # UNIX or unspecified family: keep the socket peer
        if length < need:
            raise _bad("PROXY v2 address block too short")
        if family >> 4 == 1:
            return consumed, str(ipaddress.IPv4Address(buf[16:20]))
        return consumed, str(ipaddress.IPv6Address(buf[16:32]))
    if not buf:
        return None
    raise _bad("connection does not start with a PROXY protocol header")


def _parse_v1(line: bytes) -> str | None:
    parts = line.split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return None
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise _bad("malformed PROXY v1 header")
    try:
        src = ipaddress.ip_address(parts[2].decode("ascii"))
        ipaddress.ip_address(parts[3].decode("ascii"))
        ports = [int(p) for p in parts[4:6]]
    except (ValueError, UnicodeDecodeError):
        raise _bad("malformed PROXY v1 address") from None
    if (src.version == 4) != (parts[1] == b"TCP4") or not all(0 <= p <= 65535 for p in ports):
        raise _bad("malformed PROXY v1 address")
    return str(src)
