"""HTTP/1.1 request framing rules, shared by every parser backend (RFC 9112 6.1, 6.3, 11.2; RFC 9110 7.2).

The parsers differ in what they tolerate (h11 accepts ``Content-Length`` with ``Transfer-Encoding``, a
repeated identical ``Content-Length``, obs-fold and CTL bytes; llhttp does not check ``Host``), and every
difference between two HTTP parsers on a request path is a smuggling vector. So after either backend has
produced a head, :func:`scan_request_head` applies one strict rule set, and both backends end up
accepting exactly the same requests. The scan also picks out the few headers the proxy needs, in the
single pass over the header list that a request pays for.
"""

from __future__ import annotations

import re
from typing import Final

from fastgw.codec.problem import CodecError
from fastgw.exchange import Exchange

# Headers the scan looks at; everything else costs one set membership test.
_SCANNED: Final = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"expect",
        b"upgrade",
        b"x-forwarded-for",
        b"x-request-id",
        b"traceparent",
    }
)

# Lower-case forms of the field names clients and servers commonly send, as sent and already lower-case:
# see lower_field_name.
LOWER_FIELD_NAMES: Final = {
    spelling: spelling.lower()
    for name in (
        b"Host",
        b"User-Agent",
        b"Accept",
        b"Accept-Encoding",
        b"Accept-Language",
        b"Connection",
        b"Content-Length",
        b"Content-Type",
        b"Authorization",
        b"Cookie",
        b"Cache-Control",
        b"Origin",
        b"Referer",
        b"X-Api-Key",
        b"X-API-Key",
        b"X-Request-Id",
        b"X-Request-ID",
        b"X-Forwarded-For",
        b"X-Forwarded-Proto",
        b"X-Forwarded-Host",
        b"Traceparent",
        b"Transfer-Encoding",
        b"Expect",
        b"Upgrade",
        b"If-None-Match",
        b"If-Modified-Since",
        b"Server",
        b"Date",
        b"Keep-Alive",
        b"ETag",
        b"Last-Modified",
        b"Vary",
        b"Set-Cookie",
        b"Location",
        b"Content-Encoding",
        b"Accept-Ranges",
        b"Access-Control-Allow-Origin",
    )
    for spelling in (name, name.lower())
}


def _name_slots() -> list[tuple[bytes, ...]]:
    """LOWER_FIELD_NAMES indexed by (length, first byte): (spelling, lower-case, spelling, ...) per slot."""
    slots: list[tuple[bytes, ...]] = [()] * (_NAME_SLOT_MAX_LEN << 8)
    for spelling, lowered in LOWER_FIELD_NAMES.items():
        index = (len(spelling) << 8) | spelling[0]
        slots[index] = (*slots[index], spelling, lowered)
    return slots


_NAME_SLOT_MAX_LEN: Final = 64  # longer names (none common) go to bytes.lower()
_NAME_SLOTS: Final = _name_slots()


def lower_field_name(name: bytes) -> bytes:
    """A field name in lower case. Both HTTP/1 parsers, requests and responses, once per header line.

    A common name is found in LOWER_FIELD_NAMES by its length and first byte (a list index) and one bytes
    comparison: ~100 instructions by callgrind, where a dict probe hashes the new bytes object first
    (~430) and ``bytes.lower()`` is a generic method call."""
    size = len(name)
    if 0 < size < _NAME_SLOT_MAX_LEN:
        slot = _NAME_SLOTS[(size << 8) | name[0]]
        for i in range(0, len(slot), 2):
            if slot[i] == name:
                return slot[i + 1]
    return name.lower()


# reg-name / IPv4 / IP-literal with an optional port (RFC 3986 3.2.2); anything else in Host is refused.
_HOST_RE: Final = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_MAX_CONTENT_LENGTH_DIGITS: Final = 18  # 10**18 bytes is far beyond any body limit and fits an int64
# Host values already validated (a regex match costs ~0.25 us; a set probe ~0.04 us). Bounded in count
# (cleared when full) and in bytes: longer values (past a 253-byte DNS name and a port) are matched every
# time, so the set holds at most 1024 x 260 bytes (~0.4 MiB with the set's own slots).
_VALID_HOSTS: set[bytes] = set()
_VALID_HOSTS_MAX: Final = 1024
_VALID_HOST_LEN_MAX: Final = 260


def without_trailing_whitespace(value: bytes) -> bytes:
    """A field value without trailing spaces and tabs, which llhttp keeps and RFC 9110 5.5 excludes (h11
    strips them too), so ``Content-Length: 3 `` means the same on every path. ``endswith`` is a compiled
    primitive; ``rstrip`` a method call, paid only when there is something to strip."""
    if value.endswith(b" ") or value.endswith(b"\t"):
        return value.rstrip(b" \t")
    return value


def scan_request_head(ex: Exchange, max_target: int) -> None:
    """Validate the framing of a parsed request head and fill the Exchange's framing fields.

    Raises:
        CodecError: 400 for ambiguous or malformed framing, 414 for an oversized target, 501 for
            ``CONNECT`` or an unsupported transfer coding, 505 for an HTTP version other than 1.0/1.1.
            The Exchange is then half-filled and must be discarded with the connection.
    """
    version = ex.version
    if version not in {b"1.1", b"1.0"}:
        raise CodecError(505, "http-version", f"HTTP/{version.decode('latin-1')} is not supported")
    if len(ex.target) > max_target:
        raise CodecError(414, "uri-too-long", f"request target exceeds {max_target} bytes")
    if ex.method == b"CONNECT":
        raise CodecError(501, "method-not-implemented", "CONNECT is not supported by this gateway")

    host: bytes | None = None
    content_length: bytes | None = None
    transfer_encoding: bytes | None = None
    for name, value in ex.headers:
        if name not in _SCANNED:
            continue
        if name == b"host":
            if host is not None:
                raise CodecError(400, "bad-host", "more than one Host header")
            host = value
        elif name == b"content-length":
            # Any repetition is refused, even of the same value: RFC 9112 6.3 lets a recipient merge
            # identical values, but a gateway that merges sits in front of servers that may not.
            content_length = one_content_length(value, content_length)
        elif name == b"transfer-encoding":
            if transfer_encoding is not None:
                raise CodecError(400, "bad-framing", "more than one Transfer-Encoding header")
            transfer_encoding = value
        elif name == b"connection":
            ex.conn_tokens = ex.conn_tokens + connection_tokens(value)
        elif name == b"expect":
            ex.expect_continue = expects_continue(value)
        elif name == b"upgrade":
            ex.upgrade = value.strip().lower()
        elif name == b"x-forwarded-for":
            ex.xff = value if not ex.xff else ex.xff + b", " + value
        elif name == b"x-request-id":
            ex.xrid = value
        else:  # traceparent
            ex.traceparent = value

    if transfer_encoding is not None:
        if content_length is not None:
            raise CodecError(400, "bad-framing", "both Content-Length and Transfer-Encoding are present")
        if version == b"1.0":
            # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            raise CodecError(400, "bad-framing", "Transfer-Encoding in an HTTP/1.0 request")
        # Only a lone "chunked" is accepted: a gateway that decodes chunked and forwards the result must
        # not pass on codings it did not apply (RFC 9112 6.1 lets us refuse with 501).
        if transfer_encoding.strip().lower() != b"chunked":
            raise CodecError(501, "bad-framing", "only Transfer-Encoding: chunked is supported")
        ex.chunked = True
    elif content_length is not None:
        ex.content_length = decimal_value(content_length)

    target = ex.target
    if target[:1] != b"/":
        if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
            # absolute-form (RFC 9112 3.2.2): the authority must agree with Host.
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            authority = rest if slash < 0 else rest[:slash]
            ex.target = b"/" if slash < 0 else rest[slash:]
            if host is not None and host.lower() != authority.lower():
                raise CodecError(400, "bad-host", "absolute-form authority differs from Host")
            host = authority
        elif target == b"*" and ex.method == b"OPTIONS":
            pass
        else:
            raise CodecError(400, "bad-target", "request target must be origin-form or absolute-form")

    if host is None:
        if version == b"1.1":
            raise CodecError(400, "bad-host", "HTTP/1.1 request without Host header")
        host = b""
    elif host not in _VALID_HOSTS and not valid_host(host):
        raise CodecError(400, "bad-host", "Host header is not a valid authority")
    ex.host = host

    if version == b"1.1":
        ex.keep_alive = b"close" not in ex.conn_tokens
    else:
        ex.keep_alive = b"keep-alive" in ex.conn_tokens and b"close" not in ex.conn_tokens
    if ex.upgrade and b"upgrade" not in ex.conn_tokens:
        ex.upgrade = b""  # an Upgrade header not named in Connection is not an upgrade request


def valid_host(host: bytes) -> bool:
    """Whether ``host`` is a reg-name, IPv4 or IP-literal authority with an optional port (cached)."""
    if host in _VALID_HOSTS:
        return True
    if host and _HOST_RE.fullmatch(host) is None:
        return False
    if len(host) <= _VALID_HOST_LEN_MAX:
        if len(_VALID_HOSTS) >= _VALID_HOSTS_MAX:
            _VALID_HOSTS.clear()
        _VALID_HOSTS.add(host)
    return True


def one_content_length(value: bytes, seen: bytes | None) -> bytes:
    """Content-Length rules, HTTP/1.1 and HTTP/2 alike: one field (any repetition, even of the same value,
    is refused), a decimal number of at most 18 digits. ``seen`` is the value already found, if any."""
    if seen is not None:
        raise CodecError(400, "bad-framing", "more than one Content-Length header")
    if not value.isdigit() or len(value) > _MAX_CONTENT_LENGTH_DIGITS:
        raise CodecError(400, "bad-framing", "Content-Length is not a decimal number")
    return value


def decimal_value(value: bytes) -> int:
    """``int(value)`` for a Content-Length, in a compiled loop over its digits: ``int()`` on bytes is a
    generic call that goes through a str (~900 instructions a request by callgrind). Anything but up to
    18 ASCII digits (a value with whitespace, say) is left to ``int()``, its rules and its errors."""
    size = len(value)
    if size == 0 or size > _MAX_CONTENT_LENGTH_DIGITS:
        return int(value)
    n = 0
    for i in range(size):
        digit = value[i] - 48
        if digit < 0 or digit > 9:
            return int(value)
        n = n * 10 + digit
    return n


def expects_continue(value: bytes) -> bool:
    """``Expect``: only ``100-continue`` is understood (RFC 9110 10.1.1); anything else is a 417."""
    if value.lower() != b"100-continue":
        raise CodecError(417, "expectation-failed", "only Expect: 100-continue is supported")
    return True


def connection_tokens(value: bytes) -> tuple[bytes, ...]:
    """The lower-case options of a ``Connection`` field (RFC 9110 7.6.1), requests and responses alike."""
    return tuple(t.strip().lower() for t in value.split(b",") if t.strip())


def section_size(fields: list[tuple[bytes, bytes]]) -> int:
    """A header (or trailer) section's size as the limits count it: names and values, 4 framing bytes a
    line. Requests and upstream responses alike."""
    return sum(len(name) + len(value) + 4 for name, value in fields)
