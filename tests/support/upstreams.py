"""A wire-true test upstream on 127.0.0.1 that records what reached it and answers with exact bytes."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httptools
import orjson

from tests.support.loops import shut_down


@dataclass
class SeenRequest:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    connection: int = 0  # which connection carried it: 1 for the upstream's first, and so on

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def all(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]


# A handler returns the raw response, or a list of pieces written 50 ms apart, or None to hang up.
Handler = Callable[[SeenRequest], "bytes | list[bytes] | None"]


def json_response(body: bytes) -> bytes:
    """A 200 response carrying a JSON body, as raw bytes for a test upstream's handler."""
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def ok_response(req: SeenRequest) -> bytes:
    return json_response(
        orjson.dumps({"method": req.method.decode(), "target": req.target.decode(), "len": len(req.body)})
    )


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, server: TestUpstream) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current: SeenRequest | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.tunnel = False
        self.number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.number = self.server.connections
        self.server._transports.add(self.transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._transports.discard(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            assert self.transport is not None
            self.transport.write(b"echo:" + data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tunnel = True
            rest = data[exc.args[0] :]
            if rest and self.transport is not None:
                self.transport.write(b"echo:" + rest)
        except httptools.HttpParserError:
            self.server.parse_errors += 1
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        if self.server.count_body_only:
            self.server.body_bytes += len(body)
        else:
            self.body += body

    def on_message_complete(self) -> None:
        req = SeenRequest(self.parser.get_method(), self.url, self.headers, bytes(self.body), self.number)
        self.server.requests.append(req)
        response = self.server.handler(req)
        if self.transport is None:
            return
        if response is None:
            self.transport.close()  # the handler wants the connection dropped without an answer
            return
        delay = self.server.delay
        if delay:
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self._send, response)
        else:
            self._send(response)

    def _send(self, response: bytes | list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if isinstance(response, list):
            first, *rest = response
            self.transport.write(first)
            if rest:
                asyncio.get_running_loop().call_later(0.05, self._send, rest)
                return
        else:
            self.transport.write(response)
        if self.server.close_after_response:
            self.transport.close()


class TestUpstream:
    """An HTTP/1.1 backend on its own loop in a thread; ``handler`` maps a request to raw response bytes."""

    __test__ = False

    def __init__(self, ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.ssl_context = ssl_context
        self._bind_port = port  # 0: any free port; a given one brings a closed upstream back on it
        self.requests: list[SeenRequest] = []
        self.handler: Handler = ok_response
        self.delay = 0.0
        self.close_after_response = False
        self.count_body_only = False
        self.body_bytes = 0
        self.connections = 0
        self.parse_errors = 0
        self._transports: set[asyncio.Transport] = set()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self._server = await self.loop.create_server(
                lambda: UpstreamProtocol(self), "127.0.0.1", self._bind_port, ssl=self.ssl_context
            )
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    @property
    def open_connections(self) -> int:
        return len(self._transports)

    def drop_connections(self) -> None:
        """Close every connection the gateway has open to this upstream (tunnels included), now."""

        def drop() -> None:
            for transport in list(self._transports):
                transport.close()

        self.loop.call_soon_threadsafe(drop)

    def close(self) -> None:
        async def stop() -> None:
            await shut_down(self._server, lambda: self._transports)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
