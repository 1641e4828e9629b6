"""The async upstream client handlers use: real upstreams over plain HTTP and TLS, through the pools."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

from fastgw.config.compiler import compile_config
from fastgw.proxy.client import UpstreamClient
from fastgw.proxy.context import WorkerContext
from fastgw.proxy.upstream_errors import CancelledBeforeSending, UpstreamError
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
async def test_a_request_cancelled_while_connecting_says_nothing_was_sent(
    context_for: MakeClient, certs: DevCertificates
) -> None:
    """Cancelled while its TLS handshake gets no answer, the caller learns that no byte of the request
    left (an LLM budget gives back the estimate of such a request); cancelled once the request is out,
    it is a plain cancellation."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        tls = f'tls = {{ ca = "{certs.ca_cert}" }}'
        client = context_for(snapshot_text(silent.getsockname()[1], tls=tls))
        call = asyncio.ensure_future(client.request("u", "POST", "/", body=b"{}", connect_timeout=10.0))
        await asyncio.sleep(0.2)
        call.cancel("gone")
        with pytest.raises(CancelledBeforeSending) as cut:
            await call
        assert cut.value.args == ("gone",)
