"""The client's response head from the upstream's, for HTTP/1 and HTTP/2 clients: hop-by-hop headers
and those the upstream's ``Connection`` names are removed, the route's rules apply, ``Via`` and
``X-Request-Id`` are added, ``Date`` is added when the upstream sent none; framing is decided here from
what the connection knows (the client's version and the request method)."""

from __future__ import annotations

from typing import Final

from fastgw.codec.framing import (
    connection_tokens,
    decimal_value,
    lower_field_name,
    without_trailing_whitespace,
)
from fastgw.codec.serialize import DATE, NO_BODY_STATUSES, status_line
from fastgw.exchange import Exchange
from fastgw.proxy_headers.hop_by_hop import HOP_BY_HOP
from fastgw.snapshot import Route

_RESPONSE_DROP: Final = HOP_BY_HOP | {b"x-request-id", b"via"}
# Connection values that name no other header: most upstreams send one of these on every response, and
# they need no tokenising.
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})


def response_drop_set(route_drop: frozenset[bytes]) -> frozenset[bytes]:
    """Every response header name not relayed to the client, a route's removals included."""
    return _RESPONSE_DROP | route_drop


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
    append_route_fields(ex, route, out, tls)
    out.append((b"via", via))
    out.append((b"x-request-id", ex.request_id))
    return out, framing


def append_route_fields(ex: Exchange, route: Route, fields: list[tuple[bytes, bytes]], tls: bool) -> None:
    """Append what the route adds to every response as name-value pairs, a proxied HTTP/2 one's or a
    handler's (proxy/handler_links.py): its add_response fields, HSTS over TLS, and the policies'
    on_response fields. (build_response_head appends the same as serialised lines.)"""
    fields.extend(route.add_response)
    if tls and route.hsts:
        fields.append((b"strict-transport-security", route.hsts[27:-2]))
    for hook in route.response_hooks:
        hook.on_response(ex, fields)


def _without_named(lines: list[bytes], drop: frozenset[bytes]) -> list[bytes]:
    """The field lines (``lines[1:-1]``, CRLF added) whose lower-case names are not in ``drop``: the rare
    response whose Connection header names other fields (RFC 9110 7.6.1)."""
    kept = []
    for i in range(1, len(lines) - 1):
        line = lines[i]
        if line.partition(b":")[0].lower() not in drop:
            kept.append(line + b"\r\n")
    return kept
