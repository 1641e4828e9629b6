"""The handler seam end to end, in-process, over real sockets: a test-only handler kind (registered by a
fixture) streams, waits on a client that does not read, is cancelled when the client leaves, fails
(500), and is refused a body over its route's bound (413); over HTTP/1.1 and HTTP/2 (h2c)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from fastgw.config.compiler import compile_config
from fastgw.exchange import Exchange
from fastgw.handler_api import ResponseWriter, Upstreams
from fastgw.handlers.kind import CompileContext, HandlerKind
from fastgw.handlers.registry import KINDS
from fastgw.process.worker import Worker
from tests.support.h2client import H2Client

CHUNK = 64 * 1024


@dataclass
class Probe:
    """What the test handler did, for the tests to assert on."""

    writes: int = 0
    cancelled_at: float = 0.0
    # ex.ended when the handler's cancellation ran: 0.0 while the exchange is not yet completed (its record
    # is written after the handler's except and finally clauses, which fill in how it ended)
    ended_at_cancel: float = -1.0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    bodies: list[bytes] = field(default_factory=list)
    worker: Any = None  # the in-process worker serving the test


@dataclass(frozen=True)
class ProbeSpec:
    pass


class ProbeHandler:
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def handle(self, ex: Exchange, body: bytes, out: ResponseWriter, upstreams: Upstreams) -> None:
        probe = self.probe
        probe.bodies.append(body)
        path = ex.path
        if path == b"/chunks":
            out.start(200, [(b"content-type", b"text/plain")])
            for part in (b"one,", b"two,", b"three"):
                await out.write(part)
                await asyncio.sleep(0.01)
            await out.end([(b"x-checksum", b"42")])
        elif path == b"/flood":  # ?n chunks of 64 KiB (1024: 64 MiB) as fast as the client takes them
            out.start(200, [])
            probe.started.set()
            for _ in range(int(ex.query[2:] or b"1024")):
                await out.write(b"x" * CHUNK)
                probe.writes += 1
            await out.end()
        elif path == b"/hang":
            probe.started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                probe.cancelled_at = time.monotonic()
                probe.ended_at_cancel = ex.ended
                raise
        elif path == b"/boom":
            raise RuntimeError("secret internal detail")
        elif path == b"/late-boom":
            out.start(200, [])
            await out.write(b"partial")
            await asyncio.sleep(0.01)
            raise RuntimeError("secret internal detail")
        else:
            payload = b"got %d bytes" % len(body)
            out.start(200, [(b"content-length", b"%d" % len(payload))])
            await out.write(payload)
            await out.end()


@pytest_asyncio.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[int, Probe]]:
    probe = Probe()

    def compile_probe(spec: Any, ctx: CompileContext) -> ProbeHandler:
        return ProbeHandler(probe)

    monkeypatch.setitem(KINDS, "probe", HandlerKind("a test handler", ProbeSpec, compile_probe))
    text = """
[[listeners]]
bind = "127.0.0.1:0"
[access_log]
target = "off"
[server]
send_timeout = 30
body_timeout = 0.5
[[routes]]
name = "probe"
path = "/"
kind = "probe"
auth = "none"
max_body_bytes = 1000
"""
    worker = Worker(compile_config(text.encode(), "seam.toml"))
    await worker.start()
    probe.worker = worker
    yield worker.bound[0][1], probe
    await worker.shutdown()
    await worker.wait_stopped()


async def http1(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return data


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n".encode()


@pytest.mark.asyncio
async def test_http1_chunks_arrive_as_written_with_trailers(served: tuple[int, Probe]) -> None:
    port, _ = served
    data = await http1(port, get("/chunks"))
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head
    assert b"x-request-id: " in head
    assert body == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\nx-checksum: 42\r\n\r\n"


@pytest.mark.asyncio
async def test_http1_body_is_buffered_for_the_handler(served: tuple[int, Probe]) -> None:
    port, probe = served
    request = b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = await http1(port, request + b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
    assert data.endswith(b"got 7 bytes")
    assert probe.bodies == [b"abcdefg"]


@pytest.mark.asyncio
async def test_http1_pipelined_handler_requests_keep_order_and_bodies(served: tuple[int, Probe]) -> None:
    port, probe = served
    first = b"GET /chunks HTTP/1.1\r\nHost: t\r\n\r\n"
    second = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    third = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    data = await http1(port, first + second + third)  # all three in one write: 2 and 3 wait in the queue
    assert data.count(b"HTTP/1.1 200") == 3
    assert data.index(b"three") < data.index(b"got 2 bytes") < data.index(b"got 3 bytes")
    assert probe.bodies == [b"", b"hi", b"abc"]


@pytest.mark.asyncio
async def test_http1_body_over_the_route_bound_is_413(served: tuple[int, Probe]) -> None:
    port, probe = served
    request = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = await http1(port, request + b"%x\r\n%b\r\n" % (1001, b"y" * 1001))
    assert data.startswith(b"HTTP/1.1 413")
    assert probe.bodies == []  # the handler never ran


@pytest.mark.asyncio
async def test_http1_stalled_body_gets_the_same_408_as_a_proxied_one(served: tuple[int, Probe]) -> None:
    port, probe = served
    data = await http1(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
    assert data.startswith(b"HTTP/1.1 408")
    assert probe.bodies == []


@pytest.mark.asyncio
async def test_http1_exception_is_500_without_details(served: tuple[int, Probe]) -> None:
    port, _ = served
    data = await http1(port, get("/boom"))
    assert data.startswith(b"HTTP/1.1 500")
    assert b"application/problem+json" in data
    assert b"secret" not in data and b"RuntimeError" not in data


@pytest.mark.asyncio
async def test_http1_exception_after_the_head_aborts(served: tuple[int, Probe]) -> None:
    port, _ = served
    data = await http1(port, get("/late-boom"))
    assert data.startswith(b"HTTP/1.1 200")
    # The body is the one chunk written, with no last chunk (the client sees a truncated
    # response) and no 500 after it: the request id in the head may itself contain "500".
    assert data.partition(b"\r\n\r\n")[2] == b"7\r\npartial\r\n"


@pytest.mark.asyncio
async def test_http1_disconnect_cancels_the_handler(served: tuple[int, Probe]) -> None:
    port, probe = served
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/hang"))
    await writer.drain()
    await asyncio.wait_for(probe.started.wait(), 5)
    writer.transport.abort()
    left = time.monotonic()
    for _ in range(100):
        if probe.cancelled_at:
            break
        await asyncio.sleep(0.01)
    assert probe.cancelled_at and probe.cancelled_at - left < 0.1
    assert probe.ended_at_cancel == 0.0, "completed (its record taken) before the handler said how it ended"


@pytest.mark.asyncio
async def test_http1_write_waits_for_a_client_that_does_not_read(served: tuple[int, Probe]) -> None:
    port, probe = served
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(get("/flood"))
    await asyncio.wait_for(probe.started.wait(), 5)
    await asyncio.sleep(0.3)
    held = probe.writes
    await asyncio.sleep(0.3)
    assert probe.writes == held  # write() is waiting, not buffering
    assert held < 200  # well under the 64 MiB the handler would write (the rest is in kernel buffers)
    # What the gateway itself holds for this client: its transport's buffer, at most about one write
    # past asyncio's high-water mark, never the handler's whole output.
    (conn,) = probe.worker.connections
    assert conn.transport.get_write_buffer_size() <= conn.transport.get_write_buffer_limits()[1] + 2 * CHUNK
    received = await asyncio.to_thread(_read_all, sock)
    assert probe.writes == 1024
    assert received > 1024 * CHUNK


def _read_all(sock: socket.socket) -> int:
    sock.settimeout(10)
    total = 0
    with sock:
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    return total


# -- HTTP/2 ---------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_h2_chunks_trailers_and_413(served: tuple[int, Probe]) -> None:
    port, probe = served

    def run() -> tuple[Any, Any, Any]:
        client = H2Client(port)
        try:
            chunks = client.request("/chunks")
            echo = client.request("/echo", method="POST", body=b"12345")
            big = client.request("/echo", method="POST", body=b"z" * 1001)
            return chunks, echo, big
        finally:
            client.close()

    chunks, echo, big = await asyncio.to_thread(run)
    assert chunks.status == 200 and chunks.body == b"one,two,three"
    assert chunks.trailers == [(b"x-checksum", b"42")]
    assert echo.status == 200 and echo.body == b"got 5 bytes"
    assert big.status == 413
    assert probe.bodies == [b"", b"12345"]


@pytest.mark.asyncio
async def test_h2_exception_is_500_then_reset_after_the_head(served: tuple[int, Probe]) -> None:
    port, _ = served

    def run() -> tuple[Any, Any]:
        client = H2Client(port)
        try:
            boom = client.request("/boom")
            sid = client.start("/late-boom")
            client.outcome(sid)
            return boom, client.responses[sid]
        finally:
            client.close()

    boom, late = await asyncio.to_thread(run)
    assert boom.status == 500 and b"secret" not in boom.body
    assert late.status == 200 and late.reset is not None  # the head went out: the stream is reset


@pytest.mark.asyncio
async def test_h2_reset_cancels_the_handler(served: tuple[int, Probe]) -> None:
    port, probe = served
    client = await asyncio.to_thread(H2Client, port)
    try:
        sid = await asyncio.to_thread(client.start, "/hang")
        await asyncio.wait_for(probe.started.wait(), 5)
        client.conn.reset_stream(sid)
        await asyncio.to_thread(client.flush)
        left = time.monotonic()
        for _ in range(100):
            if probe.cancelled_at:
                break
            await asyncio.sleep(0.01)
        assert probe.cancelled_at and probe.cancelled_at - left < 0.1
        assert probe.ended_at_cancel == 0.0, "completed before the handler said how it ended"
    finally:
        client.close()


@pytest.mark.asyncio
async def test_h2_write_waits_for_the_stream_window(served: tuple[int, Probe]) -> None:
    port, probe = served
    client = await asyncio.to_thread(H2Client, port)
    try:
        sid = await asyncio.to_thread(client.start, "/flood?n=64")
        await asyncio.wait_for(probe.started.wait(), 5)
        await asyncio.sleep(0.3)  # the client reads nothing, so its 64 KiB window stays closed
        held = probe.writes
        await asyncio.sleep(0.3)
        assert probe.writes == held
        assert held < 10  # stream_buffer (64 KiB) past the window: a couple of chunks
        response = await asyncio.to_thread(client.wait, sid, 30)
        assert response.status == 200 and len(response.body) == 64 * CHUNK
        assert probe.writes == 64
    finally:
        client.close()
