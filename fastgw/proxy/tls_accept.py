"""TLS handshakes for listener connections, run so that a failure is logged with its reason.

uvloop (like asyncio) treats a failed server handshake as an ``OSError`` and reports it only in debug
mode, and the application protocol never hears of it. So TLS listeners accept plain TCP and, inside
``connection_made`` (before any byte can be read), put the loop's own SSL protocol between the socket and
the connection's Protocol (proxy/front.py) -- what ``loop.start_tls()`` does, but synchronously, so the
ClientHello cannot race past it. The SSL protocol calls that Protocol's ``connection_made`` with the TLS
transport after a successful handshake; its waiter future carries a failure, which is logged in one line
saying who and why (no client certificate, unknown CA, a revoked certificate, an old protocol version).
No Task is involved.
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

# uvloop's Cython SSL protocol (not in its type stubs); asyncio's has the same constructor signature.
try:
    _UvloopSSLProtocol: Any = getattr(importlib.import_module("uvloop.loop"), "SSLProtocol", None)
except ImportError:  # pragma: no cover - uvloop is a dependency
    _UvloopSSLProtocol = None


class TlsAcceptor(asyncio.Protocol):
    __slots__ = ("_context", "_log", "_make_connection", "_timeout")

    def __init__(
        self,
        context: ssl.SSLContext,
        make_connection: Callable[[], asyncio.Protocol],
        timeout: float,
        log: Callable[[str], None],
    ) -> None:
        self._context = context
        self._make_connection = make_connection
        self._timeout = timeout
        self._log = log

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        factory: Any = sslproto.SSLProtocol
        if _UvloopSSLProtocol is not None and type(loop).__module__.startswith("uvloop"):
            factory = _UvloopSSLProtocol
        protocol = factory(
            loop,
            self._make_connection(),
            self._context,
            waiter,
            server_side=True,
            server_hostname=None,
            call_connection_made=True,
            ssl_handshake_timeout=self._timeout,
        )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        peer = transport.get_extra_info("peername")
        waiter.add_done_callback(lambda done: self._handshake_done(done, peer))

    def _handshake_done(self, done: asyncio.Future[None], peer: object) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if exc is None:
            return
        reason = getattr(exc, "reason", None) or getattr(exc, "verify_message", None) or str(exc)
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unknown peer"
        self._log(f"TLS handshake with {where} failed: {reason or type(exc).__name__}")
