"""The BODY phase and response filters on a handler route, in-process over real sockets (HTTP/1.1 and
h2c): a test-only Phase.BODY policy sees the buffered body and may deny it; a test-only response filter
rewrites the head, every chunk and the end of a handler's response."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError
from fastgw.exchange import Exchange
from fastgw.handler_api import ResponseFilter, ResponseWriter, Upstreams
from fastgw.handlers.kind import CompileContext, HandlerKind
from fastgw.handlers.registry import KINDS
from fastgw.policy.chain import Denial, Pending, Phase
from fastgw.process.worker import Worker
from tests.support.h2client import H2Client
from tests.support.upstreams import TestUpstream


class Echo:
    """Streams the request body back in two chunks."""

    async def handle(self, ex: Exchange, body: bytes, out: ResponseWriter, upstreams: Upstreams) -> None:
        out.start(200, [(b"content-length", b"%d" % len(body)), (b"content-type", b"text/plain")])
        half = len(body) // 2
        await out.write(body[:half])
        await out.write(body[half:])
        await out.end()


@dataclasses.dataclass(frozen=True)
class NoSpec:
    pass


class Shouting:
    """Per response: upper-cases the body, marks the head, appends '!' at the end."""

    def __init__(self) -> None:
        self.chunks = 0

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        headers[:] = [h for h in headers if h[0] != b"content-length"]  # the length changes
        headers.append((b"x-filtered", b"%d" % status))

    def on_chunk(self, data: bytes) -> bytes:
        self.chunks += 1
        return data.upper()

    def on_end(self) -> bytes:
        return b"!"


class BodyGuard:
    """A test policy of the BODY phase: refuses bodies that contain 'forbidden'; also a filter factory."""

    PHASE: ClassVar[Phase] = Phase.BODY
    name = "body_guard"
    shadow = False

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.filters: list[Shouting] = []

    def check(self, ex: Exchange) -> Denial | Pending | None:
        return None

    def check_body(self, ex: Exchange, body: bytes) -> Denial | None:
        self.seen.append(body)
        if b"forbidden" in body:
            return Denial(422, "unprocessable", "the body names something forbidden", "test.body")
        return None

    def response_filter(self, ex: Exchange) -> ResponseFilter | None:
        if ex.header(b"x-shout") is None:
            return None
        f = Shouting()
        self.filters.append(f)
        return f


CONFIG = """
[[listeners]]
bind = "127.0.0.1:0"
[access_log]
target = "off"
[[routes]]
name = "echo"
path = "/"
kind = "echo"
auth = "none"
max_body_bytes = 100
"""


@pytest.fixture
def echo_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    def compile_echo(spec: Any, ctx: CompileContext) -> Echo:
        return Echo()

    monkeypatch.setitem(KINDS, "echo", HandlerKind("test echo", NoSpec, compile_echo))


@pytest_asyncio.fixture
async def served(echo_kind: None) -> AsyncIterator[tuple[int, BodyGuard]]:
    snapshot = compile_config(CONFIG.encode(), "body.toml")
    guard = BodyGuard()
    route = snapshot.routes[0]
    patched = dataclasses.replace(route, chain=(guard,), body_checks=(guard,), response_filters=(guard,))
    table = snapshot.router._default  # the catch-all host table of this one-route config
    assert table is not None
    table.prefixes[b"/"].any_method = patched
    worker = Worker(snapshot)
    await worker.start()
    yield worker.bound[0][1], guard
    await worker.shutdown()
    await worker.wait_stopped()


async def post(port: int, body: bytes, extra: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n%b\r\n%b"
        % (len(body), extra, body)
    )
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return data


@pytest.mark.asyncio
async def test_http1_body_check_sees_the_body_and_may_deny(served: tuple[int, BodyGuard]) -> None:
    port, guard = served
    ok = await post(port, b"hello there")
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"\r\n\r\nhello there")
    denied = await post(port, b"a forbidden word")
    assert denied.startswith(b"HTTP/1.1 422")
    assert b"application/problem+json" in denied
    assert guard.seen == [b"hello there", b"a forbidden word"]


@pytest.mark.asyncio
async def test_http1_response_filter_rewrites_head_chunks_and_end(served: tuple[int, BodyGuard]) -> None:
    port, guard = served
    data = await post(port, b"quiet words", b"X-Shout: 1\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"x-filtered: 200" in head
    assert b"transfer-encoding: chunked" in head  # the filter dropped the length: chunked instead
    assert body == b"5\r\nQUIET\r\n6\r\n WORDS\r\n1\r\n!\r\n0\r\n\r\n"
    assert [f.chunks for f in guard.filters] == [2]
    plain = await post(port, b"quiet words")  # no filter for this request: untouched
    assert plain.endswith(b"\r\n\r\nquiet words")


@pytest.mark.asyncio
async def test_h2_body_check_and_response_filter(served: tuple[int, BodyGuard]) -> None:
    port, guard = served

    def run() -> tuple[Any, Any]:
        client = H2Client(port)
        try:
            shout = client.request("/", method="POST", body=b"quiet words", headers=[(b"x-shout", b"1")])
            denied = client.request("/", method="POST", body=b"forbidden")
            return shout, denied
        finally:
            client.close()

    shout, denied = await asyncio.to_thread(run)
    assert shout.status == 200 and shout.body == b"QUIET WORDS!"
    assert shout.header(b"x-filtered") == b"200" and shout.header(b"content-length") is None
    assert denied.status == 422
    assert guard.seen == [b"quiet words", b"forbidden"]


def test_response_filters_need_a_handler_route() -> None:
    """A proxy route relays upstream bytes on the fast path: a filter there is refused at compile time;
    a BODY policy is accepted (the route then buffers bodies whole before forwarding)."""
    from fastgw.config.route_kind import compile_route_kind
    from fastgw.config.schema import RouteSpec

    spec = RouteSpec(name="p", path="/", upstream="u", auth="none")
    with pytest.raises(ConfigError, match="need a handler kind"):
        compile_route_kind("t.toml", "routes[0]", spec, [BodyGuard()], 100)
    checked = compile_route_kind("t.toml", "routes[0]", spec, [_body_only()], 100)
    assert checked.handler is None and len(checked.body_checks) == 1


def _body_only() -> Any:
    class BodyOnly:
        PHASE: ClassVar[Phase] = Phase.BODY
        name = "body_only"
        shadow = False

        def check_body(self, ex: Exchange, body: bytes) -> Denial | None:
            return None

    return BodyOnly()


# -- a BODY policy on a proxy route: the body is buffered whole, checked, then forwarded -------------------
BIG = 300 * 1024  # past BODY_HIGH_WATER (256 KiB), where a proxied body would otherwise pause reads


@pytest_asyncio.fixture
async def proxied(upstream: TestUpstream) -> AsyncIterator[tuple[int, BodyGuard]]:
    text = f"""
[[listeners]]
bind = "127.0.0.1:0"
[access_log]
target = "off"
[upstreams.u]
targets = ["127.0.0.1:{upstream.port}"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "none"
max_body_bytes = 1048576
"""
    snapshot = compile_config(text.encode(), "proxied.toml")
    guard = BodyGuard()
    patched = dataclasses.replace(snapshot.routes[0], chain=(guard,), body_checks=(guard,))
    table = snapshot.router._default
    assert table is not None
    table.prefixes[b"/"].any_method = patched
    worker = Worker(snapshot)
    await worker.start()
    yield worker.bound[0][1], guard
    await worker.shutdown()
    await worker.wait_stopped()


@pytest.mark.asyncio
async def test_http1_proxy_route_body_checked_before_forwarding(
    proxied: tuple[int, BodyGuard], upstream: TestUpstream
) -> None:
    port, guard = proxied
    big = b"a" * BIG
    ok = await post(port, big, b"Expect: 100-continue\r\n")
    assert b"HTTP/1.1 200" in ok
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    chunked = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    assert chunked.startswith(b"HTTP/1.1 200")
    denied = await post(port, b"something forbidden")
    assert denied.startswith(b"HTTP/1.1 422")
    assert [r.body for r in upstream.requests] == [big, b"hello world"]  # the denied one never left
    assert guard.seen == [big, b"hello world", b"something forbidden"]


@pytest.mark.asyncio
async def test_h2_proxy_route_body_checked_before_forwarding(
    proxied: tuple[int, BodyGuard], upstream: TestUpstream
) -> None:
    port, guard = proxied
    big = b"b" * BIG

    def run() -> tuple[Any, Any]:
        client = H2Client(port)
        try:  # BIG is beyond the stream's 64 KiB window: the gateway acknowledges while it buffers
            return client.request("/", method="POST", body=big), client.request(
                "/", method="POST", body=b"forbidden"
            )
        finally:
            client.close()

    ok, denied = await asyncio.to_thread(run)
    assert ok.status == 200 and denied.status == 422
    assert [r.body for r in upstream.requests] == [big]
    assert guard.seen == [big, b"forbidden"]
