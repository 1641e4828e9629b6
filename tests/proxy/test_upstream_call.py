"""UpstreamCall in-process: a queued exchange that ended must not take a connection meant for a later one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastgw.config.compiler import compile_config
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial
from fastgw.proxy.context import WorkerContext
from fastgw.proxy.upstream_call import CallSink, UpstreamCall
from fastgw.proxy_headers.request_head import ClientPeer
from fastgw.upstream.connection import UpstreamConnection
from tests.support.configs import MINIMAL


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 9) if name == "peername" else default

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def is_reading(self) -> bool:  # asked by the pool when a connection is released (upstream/pool.py)
        return True


class RecordingSink(CallSink):
    """A client side that records which connections it was given and which errors it saw."""

    __slots__ = ("connections", "errors")

    def __init__(self) -> None:
        self.connections: list[UpstreamConnection | None] = []
        self.errors: list[Denial] = []

    def call_wanted(self) -> bool:
        return True

    def call_connection(self, conn: UpstreamConnection | None) -> None:
        self.connections.append(conn)

    def call_error(self, denial: Denial) -> None:
        self.errors.append(denial)


def exchange(worker: WorkerContext, target: bytes) -> Exchange:
    ex = Exchange(b"GET", target, b"1.1", [])
    ex.host = b"example.test"
    ex.path = target
    ex.route = worker.holder.current.routes[0]
    ex.body_complete = True
    return ex


@pytest.mark.asyncio
async def test_stale_ready_callback_hands_the_connection_to_the_next_exchange() -> None:
    text = MINIMAL.replace('targets = ["127.0.0.1:1"]', 'targets = ["127.0.0.1:1"]\nmax_connections = 1')
    worker = WorkerContext(compile_config(text.encode(), "call.toml"), asyncio.get_running_loop())
    route = worker.holder.current.routes[0]
    group = worker.pools.group(route.upstream)
    pool = group.pools[0]
    pool.in_use = 1  # the one connection allowed is busy: calls wait in the pool's queue
    sink = RecordingSink()
    peer = ClientPeer(b"127.0.0.1", False, b"http")

    first = UpstreamCall(worker, exchange(worker, b"/first"), group, sink, peer, worker.via, None)
    first.start()
    assert len(pool.waiters) == 1
    first.abandon()  # its exchange ended while it waited (answered, or the client gave up on it)
    # The next exchange on the same client connection (same sink) queues behind the stale waiter.
    second = UpstreamCall(worker, exchange(worker, b"/second"), group, sink, peer, worker.via, None)
    second.start()

    conn = UpstreamConnection(pool)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    pool.release(conn)  # the busy connection frees: the first waiter in line is the stale one

    assert sink.connections == [conn], "only the live exchange is attached"
    assert second.conn is conn and first.conn is None
    assert b"".join(transport.written).startswith(b"GET /second ")
    assert pool.in_use == 1 and not pool.waiters and not sink.errors
    conn.close()


@pytest.mark.asyncio
async def test_queue_timeout_is_reported_once_to_the_live_exchange_only() -> None:
    text = MINIMAL.replace('targets = ["127.0.0.1:1"]', 'targets = ["127.0.0.1:1"]\nmax_connections = 1')
    worker = WorkerContext(compile_config(text.encode(), "call.toml"), asyncio.get_running_loop())
    group = worker.pools.group(worker.holder.current.routes[0].upstream)
    pool = group.pools[0]
    pool.in_use = 1
    sink = RecordingSink()
    peer = ClientPeer(b"127.0.0.1", False, b"http")
    stale = UpstreamCall(worker, exchange(worker, b"/a"), group, sink, peer, worker.via, None)
    stale.start()
    stale.abandon()
    live = UpstreamCall(worker, exchange(worker, b"/b"), group, sink, peer, worker.via, None)
    live.start()
    pool.expire_waiters(float("inf"))
    assert [d.status for d in sink.errors] == [503]
    assert live.ex.error_detail.startswith("no free connection")
