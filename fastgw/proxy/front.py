"""The front protocol: what an accepted connection speaks, decided before any request is parsed.

A listener's connection may open with a PROXY protocol header (when the listener expects one: it names
the real client), then either the HTTP/2 preface (h2c with prior knowledge, RFC 9113 3.3, on cleartext
listeners with HTTP/2 enabled) or HTTP/1.1; on TLS listeners ALPN has already chosen ``h2`` or not.
:func:`accept` makes the listener's Protocol: the HTTP/1 :class:`ClientConnection` itself when nothing
needs detecting, otherwise a :class:`FrontProtocol` that reads the first bytes, then hands the transport
to the connection class that speaks what it found (hypercorn's ``ProtocolWrapper`` is the model; here the
wrapper steps aside once it has decided, so no request pays for it).

The HTTP/1 connection is made at once either way: it admits the client (connection limits), and its head
deadline covers the bytes read here (a client that sends half a preface gets the usual 408).
"""

from __future__ import annotations

import asyncio
from typing import Final

from fastgw.codec.h2_guard import PREFACE
from fastgw.codec.problem import CodecError
from fastgw.codec.proxy_protocol import parse_proxy_header
from fastgw.proxy.context import WorkerContext
from fastgw.proxy.http1 import ClientConnection
from fastgw.proxy.http2 import Http2Connection
from fastgw.snapshot import ListenerSettings

_PREFACE_SIZE: Final = len(PREFACE)  # 24 bytes: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def accept(worker: WorkerContext, listener: ListenerSettings) -> asyncio.Protocol:
    """The Protocol for a connection accepted on ``listener`` (called per accept)."""
    conn = ClientConnection(worker, listener)
    h2c = worker.holder.current.http2.enabled and listener.tls is None
    if not (listener.proxy_protocol or h2c or listener.tls is not None):
        return conn  # plain HTTP/1.1 only: nothing to detect
    return FrontProtocol(conn, proxy=listener.proxy_protocol, h2c=h2c)


def become_http2(conn: ClientConnection, data: bytes) -> None:
    """Hand ``conn``'s transport to an HTTP/2 connection (ALPN chose h2, or the h2c preface arrived),
    which starts with ``data`` (what was read of it so far)."""
    h2 = Http2Connection(conn.worker, conn.listener, conn)
    conn.closing = True  # this object is done; the transport now reports to h2
    conn.deadline = 0.0
    conn.worker.replace(conn, h2)
    transport = conn.transport
    assert transport is not None
    transport.set_protocol(h2)
    conn.transport = None
    h2.start(data)


class FrontProtocol(asyncio.Protocol):
    """The transport's Protocol until the first bytes say what follows; then the chosen connection's."""

    __slots__ = ("_preface", "_proxy_buf", "conn", "transport")

    def __init__(self, conn: ClientConnection, *, proxy: bool, h2c: bool) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self._proxy_buf: bytes | None = b"" if proxy else None  # a PROXY header still expected
        self._preface: bytes | None = b"" if h2c else None  # read so far of a possible HTTP/2 preface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        conn = self.conn
        conn.connection_made(transport)  # admission, peer, client certificate, head deadline
        if conn.closing:
            return  # refused (connection limits): answered and closing
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self.transport = None
            become_http2(conn, b"")
        elif self._proxy_buf is None and self._preface is None:
            self._step_aside(b"")

    def _step_aside(self, data: bytes) -> None:
        """HTTP/1.1 it is: the connection takes the transport, and ``data`` (if any) is its first read."""
        conn = self.conn
        transport = self.transport
        self.transport = None
        if transport is not None:
            transport.set_protocol(conn)
        if data:
            conn.data_received(data)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn.closing or self.transport is None:
            return
        if self._proxy_buf is not None:
            buf = self._proxy_buf + data
            try:
                parsed = parse_proxy_header(buf)
            except CodecError as err:
                self._proxy_buf = None
                self._preface = None
                self._step_aside(b"")
                conn.refuse(err)
                return
            if parsed is None:
                self._proxy_buf = buf
                return
            consumed, source = parsed
            self._proxy_buf = None
            if source is not None:
                conn.set_peer(source)
            data = buf[consumed:]
            if not data and self._preface is not None:
                return  # the request (or preface) comes in a later read
        preface = self._preface
        if preface is not None:
            data = preface + data
            if PREFACE.startswith(data[:_PREFACE_SIZE]):
                if len(data) < _PREFACE_SIZE:
                    self._preface = data  # wait for the rest of the preface
                    return
                self._preface = None
                self.transport = None
                become_http2(conn, data)
                return
            self._preface = None
        self._step_aside(data)

    # -- until it steps aside, the connection hears what its transport reports --------------------------
    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conn.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.conn.eof_received()

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()
