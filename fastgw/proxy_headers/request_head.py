"""The upstream request head (RFC 9110 7.6): hop-by-hop headers and every header named in ``Connection``
are removed; ``Host`` is the target's unless the route preserves it; ``X-Forwarded-For/-Proto/-Host`` are
overwritten unless the peer is a trusted proxy (then appended to / kept); ``Via`` gets our hop (7.6.3);
the request id and ``traceparent`` come from the caller (request_ids.py); the route's set/remove rules and
identity headers apply; framing headers are re-emitted from what the codec decoded, never copied."""

from __future__ import annotations

from typing import Any, Final

from fastgw.exchange import Exchange
from fastgw.proxy_headers.hop_by_hop import HOP_BY_HOP
from fastgw.snapshot import Route

# Request headers the gateway always re-emits itself (never copied from the client).
_REQUEST_OWNED: Final = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"expect",
    b"via",
    b"x-request-id",
    b"traceparent",
    b"x-forwarded-for",
    b"forwarded",
}
# ... and, when the peer is not a trusted proxy, these too.
_REQUEST_OWNED_UNTRUSTED: Final = _REQUEST_OWNED | {b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip"}


def request_drop_sets(route_drop: frozenset[bytes]) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """Every request header name not copied upstream, for (untrusted, trusted) peers, with a route's own
    removals folded in at compile time so the hot loop pays one set probe per header."""
    return _REQUEST_OWNED_UNTRUSTED | route_drop, _REQUEST_OWNED | route_drop


# Rendered identity headers by identity object: policies hand out one object per key or token (their
# caches), so a request usually finds its lines here (~0.1 us instead of ~2 us). Entries hold their
# identity and names, so an id is never reused while its entry lives. Bounded.
_IDENTITY_LINES: dict[int, tuple[Any, tuple[tuple[bytes, str], ...], bytes]] = {}
_IDENTITY_LINES_MAX: Final = 16384


def identity_lines(identity: Any, names: tuple[tuple[bytes, str], ...]) -> bytes:
    """Who the caller is, for the upstream (the client's own copies of these headers were dropped)."""
    entry = _IDENTITY_LINES.get(id(identity))
    if entry is not None and entry[0] is identity and entry[1] is names:
        return entry[2]
    lines = _render_identity(identity, names)
    if len(_IDENTITY_LINES) >= _IDENTITY_LINES_MAX:
        _IDENTITY_LINES.clear()
    _IDENTITY_LINES[id(identity)] = (identity, names, lines)
    return lines


def _render_identity(identity: Any, names: tuple[tuple[bytes, str], ...]) -> bytes:
    out = []
    for header, attribute in names:
        value = getattr(identity, attribute)
        if isinstance(value, frozenset):
            value = (" " if attribute == "scopes" else ",").join(sorted(value))
        encoded = str(value).encode("utf-8")
        if encoded and b"\r" not in encoded and b"\n" not in encoded:
            out.append(header + b": " + encoded + b"\r\n")
    return b"".join(out)


class ClientPeer:
    """What the upstream request head needs from the client connection: the peer's address, whether it is
    a trusted proxy, the scheme it spoke (b"http" or b"https") and, for an untrusted peer, our
    X-Forwarded-For and -Proto lines, the same for every request on the connection and so rendered once.
    A compiled class: read natively per request (through a Protocol type, four generic lookups)."""

    __slots__ = ("forwarded", "ip_bytes", "proto", "trusted")

    def __init__(self, ip_bytes: bytes, trusted: bool, proto: bytes) -> None:
        self.ip_bytes = ip_bytes
        self.trusted = trusted
        self.proto = proto
        self.forwarded = b"x-forwarded-for: " + ip_bytes + b"\r\nx-forwarded-proto: " + proto + b"\r\n"


def build_request_head(
    ex: Exchange,
    route: Route,
    path: bytes,
    host: bytes,
    peer: ClientPeer,
    via: bytes,
    trace: bytes,
) -> list[bytes]:
    """Return the upstream request head as pieces to join (the body framing line included)."""
    peer_trusted = peer.trusted
    parts = [b"%b %b HTTP/1.1\r\nhost: %b\r\n" % (ex.method, path, host)]
    named = ex.conn_tokens
    incoming_via = b""
    # Untrusted peers: every X-Forwarded-* header of the client is in the drop set, ours replace them.
    drop = route.drop_request_trusted if peer_trusted else route.drop_request
    for name, value in ex.headers:
        # A name with "_" goes when it is a dropped one spelled so: servers that read headers through a
        # CGI/WSGI environ see X_Consumer and X-Consumer as one (HTTP_X_CONSUMER), and our identity or
        # forwarding headers must never come from the client (nginx drops every "_" name by default).
        if name in drop or (b"_" in name and name.replace(b"_", b"-") in drop):
            if name == b"via":
                incoming_via = value
            continue
        if named and name in named:
            continue
        parts.append(b"%b: %b\r\n" % (name, value))  # compiled: one allocation, no tuple
    if peer_trusted:
        # A trusted proxy's X-Forwarded-For is extended, its -Proto and -Host kept when they were copied.
        xff = ex.xff + b", " + peer.ip_bytes if ex.xff else peer.ip_bytes
        parts.append(b"x-forwarded-for: %b\r\n" % xff)
        if not _copied(ex, b"x-forwarded-proto", drop):
            parts.append(b"x-forwarded-proto: %b\r\n" % peer.proto)
        if ex.host and not _copied(ex, b"x-forwarded-host", drop):
            parts.append(b"x-forwarded-host: %b\r\n" % ex.host)
    else:
        parts.append(peer.forwarded)
    if incoming_via:
        via = b"%b, %b" % (incoming_via, via)
    if ex.host and not peer_trusted:  # the common case: X-Forwarded-Host in the same build as Via
        parts.append(
            b"x-forwarded-host: %b\r\nvia: %b\r\nx-request-id: %b\r\ntraceparent: %b\r\n"
            % (ex.host, via, ex.request_id, trace)
        )
    else:
        parts.append(b"via: %b\r\nx-request-id: %b\r\ntraceparent: %b\r\n" % (via, ex.request_id, trace))
    if route.add_request:
        parts.append(route.add_request)
    identity = ex.consumer
    if identity is not None and route.identity_headers:
        parts.append(identity_lines(identity, route.identity_headers))
    if ex.upgrade == b"websocket":
        parts.append(b"connection: upgrade\r\nupgrade: websocket\r\n")
    if ex.chunked:
        parts.append(b"transfer-encoding: chunked\r\n\r\n")
    elif ex.content_length >= 0:
        parts.append(b"content-length: %d\r\n\r\n" % ex.content_length)
    else:
        parts.append(b"\r\n")
    return parts


def _copied(ex: Exchange, name: bytes, drop: frozenset[bytes]) -> bool:
    """Whether the request header loop above copied a ``name`` header upstream (trusted peers only)."""
    if name in drop or name in ex.conn_tokens:
        return False
    return any(header == name for header, _ in ex.headers)
