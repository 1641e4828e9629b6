"""Header rewriting between client and upstream, in both directions. Pure bytes in, bytes out.

Request side (RFC 9110 7.6): hop-by-hop headers and every header named in ``Connection`` are removed;
``Host`` is the target's unless the route preserves it; ``X-Forwarded-For/-Proto/-Host`` are overwritten
unless the peer is a trusted proxy (then appended to / kept); ``Via`` gets our hop (7.6.3); the request id
and W3C ``traceparent`` are kept when well-formed, else generated; the route's set/remove rules apply;
framing headers are re-emitted from what the codec decoded, never copied.

Response side: hop-by-hop headers are removed, the route's rules apply, ``Via`` and ``X-Request-Id`` are
added, ``Date`` is added when the upstream sent none; framing is decided by the connection (it knows the
client's version and the request method).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any, Final

from fastgw.codec.framing import (
    connection_tokens,
    decimal_value,
    lower_field_name,
    without_trailing_whitespace,
)
from fastgw.codec.serialize import DATE, NO_BODY_STATUSES, status_line
from fastgw.exchange import Exchange
from fastgw.snapshot import Route, Snapshot

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"http2-settings",  # RFC 9113 3.1: belongs to an h2c upgrade, which is never forwarded
    }
)
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
_RESPONSE_DROP: Final = HOP_BY_HOP | {b"x-request-id", b"via"}
# Connection values that name no other header: most upstreams send one of these on every response, and
# they need no tokenising.
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})


def request_drop_sets(route_drop: frozenset[bytes]) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """Every request header name not copied upstream, for (untrusted, trusted) peers, with a route's own
    removals folded in at compile time so the hot loop pays one set probe per header."""
    return _REQUEST_OWNED_UNTRUSTED | route_drop, _REQUEST_OWNED | route_drop


def response_drop_set(route_drop: frozenset[bytes]) -> frozenset[bytes]:
    """Every response header name not relayed to the client, a route's removals included."""
    return _RESPONSE_DROP | route_drop


_SAFE_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_TRACEPARENT: Final = re.compile(rb"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


_LOW_BYTE: Final = tuple(b"%02x" % i for i in range(256))


class IdSource:
    """Request ids and trace ids, unique per worker: a random per-process prefix plus a counter.

    Cheaper than ``uuid4`` (~0.15 us vs ~1.5 us) and still unique across workers and restarts. The counter's
    hex form is rendered in blocks of 256: its high 14 digits once a block, the low byte from a table, so
    an id costs one concatenation.
    """

    __slots__ = (
        "_counter",
        "_id_block",
        "_last",
        "_prefix",
        "_span_block",
        "_trace_block",
        "_trace_prefix",
    )

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex().encode()
        self._trace_prefix = b"00-" + os.urandom(8).hex().encode()
        self._counter = 0
        self._last = b""  # the low byte of the last generated request id, reused by traceparent()
        self._new_block(0)

    def _new_block(self, high: int) -> None:
        digits = b"%014x" % high
        self._id_block = self._prefix + digits
        self._trace_block = self._trace_prefix + digits
        self._span_block = b"-" + digits

    def _next_low(self) -> bytes:
        """The next counter value's low byte in hex; a new block's high digits when it rolls over."""
        n = self._counter = self._counter + 1
        low = n & 0xFF
        if not low:
            self._new_block(n >> 8)
        return _LOW_BYTE[low]

    def request_id(self, candidate: bytes) -> bytes:
        if candidate and _SAFE_REQUEST_ID.fullmatch(candidate) is not None:
            self._last = b""
            return candidate
        self._last = lo = self._next_low()
        return self._id_block + lo

    def traceparent(self, candidate: bytes) -> bytes:
        """A valid incoming traceparent, else a new one (its ids share the request id's counter)."""
        if candidate and _TRACEPARENT.fullmatch(candidate) is not None:
            return candidate
        lo = self._last or self._next_low()
        self._last = b""
        return self._trace_block + lo + self._span_block + lo + b"-01"


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


def header_lines(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """HTTP/1.1 ``name: value`` lines for ``fields``, each ending in CRLF."""
    return b"".join(n + b": " + v + b"\r\n" for n, v in fields)


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
        if name in drop:
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


# The framing an upstream response declared, as build_response_head and build_h2_response_headers report
# it: a Content-Length (>= 0), none (the body runs until close, unless the response has none), or chunked.
FRAMING_NONE: Final = -1
FRAMING_CHUNKED: Final = -2


def transfer_encoding_framing(value: bytes) -> int:
    """The framing one Transfer-Encoding field gives a response, as llhttp reads its body: chunked when
    chunked is the last coding, else the body runs until the connection closes, also after an earlier
    field that said chunked (the last field wins). llhttp refused any response with both Content-Length
    and Transfer-Encoding before the head reached us. Both response builders, so that the framing they
    report (which decides UpstreamConnection's chunked-body parser) agrees with llhttp's."""
    return FRAMING_CHUNKED if value.strip().lower().endswith(b"chunked") else FRAMING_NONE


# What build_response_head does with a field of the upstream's response head, by name.
FIELD_COPY: Final = 0  # relayed as received
FIELD_DROP: Final = 1  # hop-by-hop, gateway-owned or removed by the route
FIELD_DATE: Final = 2  # relayed; the gateway adds none
FIELD_LENGTH: Final = 3  # relayed; the body's framing
FIELD_TRANSFER_ENCODING: Final = 4  # dropped (the client's framing is ours); the body's framing
FIELD_CONNECTION: Final = 5  # dropped; may name more fields to drop
FieldRule = tuple[int, bytes, bytes, int]  # (name length, lower-case name, Capitalised-Name, action)


def response_field_table(drop: frozenset[bytes]) -> tuple[tuple[FieldRule, ...], ...]:
    """The names build_response_head acts on, indexed by their first byte (ASCII-lower-cased by ``| 0x20``):
    a field line whose first byte has no entry is relayed after one index, with no name extracted.

    ``drop`` is the route's ``drop_response``; it wins over Date and Content-Length (a route that removes
    Content-Length gets a re-chunked body, as before)."""
    actions: dict[bytes, int] = {name: FIELD_DROP for name in drop}
    actions.setdefault(b"date", FIELD_DATE)
    actions.setdefault(b"content-length", FIELD_LENGTH)
    actions[b"transfer-encoding"] = FIELD_TRANSFER_ENCODING
    actions[b"connection"] = FIELD_CONNECTION
    slots: list[list[FieldRule]] = [[] for _ in range(256)]
    for name, action in sorted(actions.items()):
        capitalised = b"-".join(part[:1].upper() + part[1:] for part in name.split(b"-"))
        slots[name[0] | 0x20].append((len(name), name, capitalised, action))
    return tuple(tuple(slot) for slot in slots)


def field_action(table: tuple[tuple[FieldRule, ...], ...], line: bytes) -> tuple[int, int]:
    """``(action, name length)`` of one field line (``name:value``, validated by llhttp) by ``table``.

    Only primitives that mypyc compiles inline: a method call on bytes (``find``, ``partition``) costs ~700
    instructions by callgrind, and a response head has several lines. A name is matched by its length and
    the colon after it, then by the two usual spellings; other spellings pay for one ``lower()``."""
    size = len(line)
    for length, lower, capitalised, action in table[line[0] | 0x20]:
        if (
            length < size
            and line[length] == 0x3A
            and (line.startswith(lower) or line.startswith(capitalised) or line[:length].lower() == lower)
        ):
            return action, length
    return FIELD_COPY, 0


def field_value(line: bytes, name_length: int) -> bytes:
    """The value of a field line, leading whitespace removed (trailing whitespace is left to the caller:
    every value read here is stripped, tokenised or parsed by ``int()`` rules)."""
    i = name_length + 1
    size = len(line)
    while i < size and (line[i] == 0x20 or line[i] == 0x09):
        i += 1
    return line[i:]


def field_pairs(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """``(lower-case name, value)`` pairs of a response head's field lines (``lines[1:-1]``, as
    UpstreamConnection reports them), for HTTP/2 clients. Compiled primitives only (see field_action)."""
    pairs = []
    for i in range(1, len(lines) - 1):
        line = lines[i]
        colon = 0
        while line[colon] != 0x3A:  # llhttp accepted the line: it has a colon after a non-empty name
            colon += 1
        pairs.append((lower_field_name(line[:colon]), without_trailing_whitespace(field_value(line, colon))))
    return pairs


def build_response_head(
    ex: Exchange,
    route: Route,
    status: int,
    head: bytes,
    lines: list[bytes],
    via: bytes,
    draining: bool,
    tls: bool = False,
) -> tuple[bytes, bool, bool, int]:
    """Serialise the response head for the client and decide its framing.

    ``head`` is the upstream's head from its status line to the CRLF ending its last field line, and
    ``lines`` is ``head.split(b"\r\n")``: the status line, the field lines, then an empty string. llhttp
    has validated both (tokens, values, CRLF line ends, no obs-fold), so field lines are relayed as
    received: runs of relayed lines are copied from ``head`` in one slice each, and only the lines a rule
    names (``route.response_fields``) are looked at further.

    Returns ``(head, chunk_out, close, framing)``: whether the body must be re-chunked (an upstream chunked
    or close-delimited body to an HTTP/1.1 client), whether the connection closes after this response
    (client asked, HTTP/1.0 close-delimited body, request body not fully read, or the worker drains), and
    the upstream's framing (a length, FRAMING_NONE or FRAMING_CHUNKED). Hop-by-hop fields, fields named
    in the upstream's ``Connection`` and the route's removals are dropped; the upstream's Content-Length is
    kept (never present with Transfer-Encoding).
    """
    table = route.response_fields
    parts = [status_line(status)]
    has_date = False
    framing = FRAMING_NONE
    named: tuple[bytes, ...] = ()  # what the upstream's Connection header names
    offset = len(lines[0]) + 2  # where the current field line starts in head
    run = offset  # start of the run of relayed lines not yet copied
    for i in range(1, len(lines) - 1):
        line = lines[i]
        end = offset + len(line) + 2
        action, length = field_action(table, line)
        if action == FIELD_COPY:
            pass
        elif action == FIELD_DATE:
            has_date = True
        elif action == FIELD_LENGTH:
            framing = decimal_value(field_value(line, length))
        else:
            if offset > run:
                parts.append(head[run:offset])
            run = end
            if action == FIELD_TRANSFER_ENCODING:
                framing = transfer_encoding_framing(field_value(line, length))
            elif action == FIELD_CONNECTION:
                value = field_value(line, length)
                # Two compiled comparisons first: the set probe costs ~400 instructions by callgrind.
                if value != b"keep-alive" and value != b"close" and value not in _PLAIN_CONNECTION:  # noqa: PLR1714
                    named += connection_tokens(value)
        offset = end
    if offset > run:
        parts.append(head[run:offset])
    if named and any(t not in (b"close", b"keep-alive") for t in named):
        parts = [parts[0], *_without_named(lines, route.drop_response | frozenset(named))]  # RFC 9110 7.6.1
    if not has_date:
        parts.append(DATE.value)
    parts.append(route.add_response_lines)
    if tls and route.hsts:
        parts.append(route.hsts)
    for hook in route.response_hooks:
        extra: list[tuple[bytes, bytes]] = []
        hook.on_response(ex, extra)
        for name, value in extra:
            parts.append(b"%b: %b\r\n" % (name, value))
    parts.append(b"via: %b\r\nx-request-id: %b\r\n" % (via, ex.request_id))
    chunk_out = False
    close = not ex.keep_alive or draining or not ex.body_complete
    if status == 101:
        parts.append(b"connection: upgrade\r\nupgrade: " + ex.upgrade + b"\r\n")
    elif framing < 0 and not (ex.method == b"HEAD" or status in NO_BODY_STATUSES):
        if ex.version == b"1.1":
            chunk_out = True
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            close = True  # HTTP/1.0 client: the body ends when we close
    if status != 101:
        if close:
            parts.append(b"connection: close\r\n")
        elif ex.version == b"1.0":
            parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunk_out, close, framing


def build_h2_response_headers(
    ex: Exchange,
    route: Route,
    status: int,
    headers: list[tuple[bytes, bytes]],
    via: bytes,
    tls: bool,
) -> tuple[list[tuple[bytes, bytes]], int]:
    """The HTTP/2 header list of a proxied response and the upstream's framing: the same rules as
    :func:`build_response_head`, with framing left to HTTP/2 (Content-Length kept when present)."""
    drop = route.drop_response
    out = [(b":status", b"%d" % status)]
    has_date = False
    framing = FRAMING_NONE
    named: tuple[bytes, ...] = ()  # what the upstream's Connection header names
    for name, value in headers:
        if name in drop:
            if name == b"transfer-encoding":
                framing = transfer_encoding_framing(value)
            elif name == b"connection" and value not in _PLAIN_CONNECTION:
                named += connection_tokens(value)
            continue
        if name == b"content-length":
            framing = decimal_value(value)
        elif name == b"date":
            has_date = True
        out.append((name, value))
    if named:
        out = [field for field in out if field[0] not in named]
    if not has_date:
        out.append((b"date", DATE.value[6:-2]))
    out.extend(route.add_response)
    if tls and route.hsts:
        out.append((b"strict-transport-security", route.hsts[27:-2]))
    for hook in route.response_hooks:
        hook.on_response(ex, out)
    out.append((b"via", via))
    out.append((b"x-request-id", ex.request_id))
    return out, framing


# Set by codec/problem.py on every problem response: never repeated from the route's headers.
_PROBLEM_OWN: Final = frozenset(
    {b"content-type", b"content-length", b"cache-control", b"x-content-type-options", b"x-request-id"}
)


def answer_headers(
    ex: Exchange | None, own: tuple[tuple[bytes, bytes], ...], tls: bool, snapshot: Snapshot
) -> tuple[tuple[bytes, bytes], ...]:
    """The extra headers of a response the gateway makes itself (a Denial, an upstream failure, a codec
    error): ``own`` (the Denial's ``WWW-Authenticate``, ``Retry-After``...) plus what a proxied response
    on the same route gets -- its added response headers (security headers), HSTS over TLS, and its
    ``on_response`` hooks (CORS for the request's Origin, RateLimit) -- never repeating a name ``own`` or
    the problem renderer already sets. Outside any route (``ex`` None or unrouted): the global security
    headers and HSTS. The one place for both protocols; a cold path, so it may allocate."""
    route = ex.route if ex is not None else None
    taken = _PROBLEM_OWN | {name for name, _ in own}
    out = list(own)
    if route is not None:
        added, hsts = route.add_response, route.hsts[27:-2]  # the value of "strict-transport-security: ..."
    else:
        added, hsts = snapshot.security_headers, snapshot.hsts
    out.extend(field for field in added if field[0] not in taken)
    if tls and hsts and b"strict-transport-security" not in taken:
        out.append((b"strict-transport-security", hsts))
    if route is not None and ex is not None and route.response_hooks:
        hooked: list[tuple[bytes, bytes]] = []
        for hook in route.response_hooks:
            hook.on_response(ex, hooked)
        out.extend(field for field in hooked if field[0] not in taken)
    return tuple(out)


# Never relayed in trailers (RFC 9110 6.5.1): framing, routing, authentication and controls.
_TRAILER_DROP: Final = HOP_BY_HOP | {
    b"content-length",
    b"content-type",
    b"content-encoding",
    b"host",
    b"authorization",
    b"set-cookie",
    b"cookie",
    b"cache-control",
    b"expires",
    b"date",
    b"location",
    b"retry-after",
    b"vary",
    b"warning",
    b"www-authenticate",
}


def filter_trailers(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The trailer fields that may pass through a proxy, either way."""
    return [(n, v) for n, v in fields if n not in _TRAILER_DROP and n[:1] != b":"]


def trailer_lines(fields: list[tuple[bytes, bytes]]) -> bytes:
    """The last chunk of a chunked HTTP/1.1 body, carrying ``fields`` as trailers."""
    return b"0\r\n" + header_lines(fields) + b"\r\n"


def _without_named(lines: list[bytes], drop: frozenset[bytes]) -> list[bytes]:
    """The field lines (``lines[1:-1]``, CRLF added) whose lower-case names are not in ``drop``: the rare
    response whose Connection header names other fields (RFC 9110 7.6.1)."""
    kept = []
    for i in range(1, len(lines) - 1):
        line = lines[i]
        if line.partition(b":")[0].lower() not in drop:
            kept.append(line + b"\r\n")
    return kept
