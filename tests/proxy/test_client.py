"""The async upstream client handlers use: real upstreams over plain HTTP and TLS, through the pools."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

from fastgw.config.compiler import compile_config
from fastgw.exchange import Exchange
from fastgw.proxy.client import UpstreamClient
from fastgw.proxy.context import WorkerContext
from fastgw.proxy.upstream_call import CallSink, UpstreamCall
from fastgw.proxy.upstream_errors import UpstreamError, not_sent
from fastgw.proxy_headers.request_head import ClientPeer
from fastgw.tls.dev_certs import DevCertificates, write_dev_certificates
from tests.support.ports import free_port
from tests.support.upstreams import SeenRequest, TestUpstream, json_response

MakeClient = Callable[[bytes], UpstreamClient]


def snapshot_text(port: int, *, tls: str = "", extra: str = "", targets: str = "") -> bytes:
    targets = targets or f'"127.0.0.1:{port}"'
    return f"""
[[listeners]]
bind = "127.0.0.1:0"
[access_log]
target = "off"
[upstreams.u]
targets = [{targets}]
{tls}
{extra}
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "none"
""".encode()


@pytest_asyncio.fixture
async def context_for() -> AsyncIterator[MakeClient]:
    made: list[WorkerContext] = []

    def make(text: bytes) -> UpstreamClient:
        worker = WorkerContext(compile_config(text, "client.toml"), asyncio.get_running_loop())
        made.append(worker)
        return UpstreamClient(worker)

    yield make
    for worker in made:
        worker.pools.close()
    await asyncio.sleep(0.01)


@pytest.fixture
def certs(tmp_path: Path) -> DevCertificates:
    return write_dev_certificates(tmp_path / "certs")


@pytest.fixture
def tls_upstream(certs: DevCertificates) -> Iterator[TestUpstream]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    server = TestUpstream(ssl_context=ctx)
    yield server
    server.close()


@pytest.mark.asyncio
async def test_request_reads_status_headers_and_body(upstream: TestUpstream, context_for: MakeClient) -> None:
    client = context_for(snapshot_text(upstream.port))
    response = await client.request("u", "POST", "/v1/x?q=1", [(b"X-Key", b"k1")], b'{"a": 1}')
    assert response.status == 200
    assert response.header(b"content-type") == b"application/json"
    assert orjson.loads(await response.read()) == {"method": "POST", "target": "/v1/x?q=1", "len": 8}
    seen = upstream.requests[0]
    assert seen.header(b"x-key") == b"k1" and seen.header(b"host") == f"127.0.0.1:{upstream.port}".encode()
    assert seen.body == b'{"a": 1}'
    # The connection went back to the pool: a second request reuses it.
    again = await client.request("u", "GET", "/again")
    assert (await again.read()) and upstream.connections == 1


@pytest.mark.asyncio
async def test_streamed_body_arrives_in_chunks(upstream: TestUpstream, context_for: MakeClient) -> None:
    upstream.handler = lambda req: [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
        b"6\r\nsecond\r\n0\r\nx-done: yes\r\n\r\n",
    ]
    client = context_for(snapshot_text(upstream.port))
    response = await client.request("u", "GET", "/stream")
    chunks = [chunk async for chunk in response]
    assert chunks == [b"first", b"second"]
    assert response.trailers == [(b"x-done", b"yes")]


@pytest.mark.asyncio
async def test_tls_upstream_with_the_test_ca(
    tls_upstream: TestUpstream, certs: DevCertificates, context_for: MakeClient
) -> None:
    text = snapshot_text(tls_upstream.port, tls=f'tls = {{ ca = "{certs.ca_cert}", sni = "localhost" }}')
    client = context_for(text)
    response = await client.request("u", "GET", "/secure")
    assert response.status == 200 and b"/secure" in await response.read()


@pytest.mark.asyncio
async def test_tls_verification_failure_is_an_error(
    tls_upstream: TestUpstream, context_for: MakeClient
) -> None:
    client = context_for(snapshot_text(tls_upstream.port, tls="tls = { verify = true }"))
    with pytest.raises(UpstreamError) as err:
        await client.request("u", "GET", "/secure")
    assert err.value.status == 502 and err.value.problem == "upstream-tls"


@pytest.mark.asyncio
async def test_early_close_discards_the_connection(upstream: TestUpstream, context_for: MakeClient) -> None:
    big = b"y" * 100_000
    upstream.handler = lambda req: [
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (2 * len(big)),
        big,
        big,
    ]
    client = context_for(snapshot_text(upstream.port))
    response = await client.request("u", "GET", "/big")
    response.close()  # mid-body: the connection's framing is lost, so it must not be reused
    pool = client.worker.pools.group(client.worker.holder.current.upstreams["u"]).pools[0]
    assert pool.in_use == 0 and not pool.idle
    upstream.handler = lambda req: json_response(b"{}")
    again = await client.request("u", "GET", "/next")
    assert await again.read() == b"{}"
    assert upstream.connections == 2  # a fresh connection, not the abandoned one


@pytest.mark.asyncio
async def test_stalled_upstream_hits_the_deadline(upstream: TestUpstream, context_for: MakeClient) -> None:
    upstream.delay = 5.0  # answers long after the deadline
    client = context_for(snapshot_text(upstream.port))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamError) as err:
        await client.request("u", "GET", "/slow", timeout=0.3)
    assert err.value.status == 504 and err.value.problem == "upstream-timeout"
    assert loop.time() - started < 2.0
    pool = client.worker.pools.group(client.worker.holder.current.upstreams["u"]).pools[0]
    assert pool.in_use == 0 and not pool.idle  # the stalled connection was discarded


@pytest.mark.asyncio
async def test_body_that_stalls_midway_hits_the_deadline(
    upstream: TestUpstream, context_for: MakeClient
) -> None:
    def stall(req: SeenRequest) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]  # 7 bytes never come

    upstream.handler = stall
    client = context_for(snapshot_text(upstream.port))
    response = await client.request("u", "GET", "/half", timeout=0.5)
    with pytest.raises(UpstreamError) as err:
        await response.read()
    assert err.value.status == 504


@pytest.mark.asyncio
async def test_connect_failure_moves_to_a_sibling_target(
    upstream: TestUpstream, context_for: MakeClient
) -> None:
    dead = free_port()
    text = snapshot_text(0, targets=f'"127.0.0.1:{dead}", "127.0.0.1:{upstream.port}"')
    client = context_for(text)
    for _ in range(2):  # whichever target round robin picks first, the request is answered
        response = await client.request("u", "GET", "/any")
        assert response.status == 200
        await response.read()


@pytest.mark.asyncio
async def test_unreachable_upstream_raises(context_for: MakeClient) -> None:
    client = context_for(snapshot_text(free_port()))
    with pytest.raises(UpstreamError) as err:
        await client.request("u", "GET", "/")
    assert err.value.status == 502 and err.value.problem == "upstream-unavailable"
    assert "cannot connect" in err.value.detail


@pytest.mark.asyncio
async def test_a_request_cancelled_while_connecting_is_marked_not_sent(
    context_for: MakeClient, certs: DevCertificates, upstream: TestUpstream
) -> None:
    """Cancelled while its TLS handshake gets no answer, the request is marked as never sent (an LLM
    budget gives such a request's estimate back); cancelled once it is out, it is not. Either way the
    cancellation stays a plain CancelledError with its message (asyncio.timeout and TaskGroup in 3.11
    know a cancellation by its exact type)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        tls = f'tls = {{ ca = "{certs.ca_cert}" }}'
        client = context_for(snapshot_text(silent.getsockname()[1], tls=tls))
        call = asyncio.ensure_future(client.request("u", "POST", "/", body=b"{}", connect_timeout=10.0))
        await asyncio.sleep(0.2)
        call.cancel("gone")
        with pytest.raises(asyncio.CancelledError) as cut:
            await call
        assert type(cut.value) is asyncio.CancelledError and cut.value.args == ("gone",)
        assert not_sent(cut.value)
    upstream.delay = 5.0  # the request goes out; its answer is late
    client = context_for(snapshot_text(upstream.port))
    call = asyncio.ensure_future(client.request("u", "POST", "/out", body=b"{}", connect_timeout=10.0))
    deadline = time.monotonic() + 5
    while not upstream.requests and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert [r.target for r in upstream.requests] == [b"/out"]
    call.cancel("gone")
    with pytest.raises(asyncio.CancelledError) as cut:
        await call
    assert not not_sent(cut.value)


class _HeadHook(CallSink):
    """A proxied exchange's sink that runs ``hook`` when its answer's head arrives."""

    def __init__(self, hook: Callable[[], None]) -> None:
        self.hook = hook
        self.ended = asyncio.get_running_loop().create_future()

    def call_wanted(self) -> bool:
        return True

    def call_connection(self, conn: object) -> None:
        pass

    def call_head(self, status: int, head: bytes, lines: list[bytes]) -> int:
        self.hook()
        return 2

    def call_body(self, data: bytes) -> None:
        pass

    def call_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        pass

    def call_end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    def call_error(self, denial: object) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    def call_upgrade(self, rest: bytes) -> bool:
        return False

    def flush(self) -> None:
        pass

    def pause_client_reading(self) -> None:
        pass

    def resume_client_reading(self) -> None:
        pass


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_writes", ["false", "true"])
async def test_a_connection_freed_as_a_waiting_request_is_cancelled_does_not_carry_it(
    context_for: MakeClient, upstream: TestUpstream, batch_writes: str
) -> None:
    """One connection allowed: B waits for the one A holds. B's client leaves, and in the same loop
    iteration A's answer ends and frees the connection, which the pool hands to B's waiter. It must not
    carry B's request (B is marked not sent: an LLM budget would give its estimate back for a call the
    provider then ran)."""
    upstream.handler = lambda req: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    client = context_for(
        snapshot_text(upstream.port, extra=f"max_connections = 1\n[server]\nbatch_writes = {batch_writes}")
    )
    worker = client.worker
    waiting: list[asyncio.Future[object]] = []
    sink = _HeadHook(lambda: waiting[0].cancel("client_closed"))  # B's client leaves, this iteration
    ex = Exchange(b"GET", b"/a", b"1.1", [])
    ex.body_complete = True
    group = worker.pools.group(worker.holder.current.upstreams["u"])
    call = UpstreamCall(worker, ex, group, sink, ClientPeer(b"", False, b"http"), worker.via, None)
    call.client_head = b"\r\n"
    upstream.delay = 0.3  # A's answer comes once B waits for the connection
    call.start()
    waiting.append(asyncio.ensure_future(client.request("u", "POST", "/b", body=b"{}", connect_timeout=10.0)))
    with pytest.raises(asyncio.CancelledError) as cut:
        await waiting[0]
    assert not_sent(cut.value)
    await asyncio.wait_for(sink.ended, 5)
    await asyncio.sleep(0.2)  # a request B's freed connection carried would have reached the upstream
    assert [r.target for r in upstream.requests] == [b"/a"]
