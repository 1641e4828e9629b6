"""Streaming with backpressure: 1 GiB up and 1 GiB down pass with the gateway's RSS under 100 MiB."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

import pytest

from tests.support.clients import connect
from tests.support.gateways import Gateway
from tests.support.memory import rss_mib
from tests.support.upstreams import TestUpstream, UpstreamProtocol

GIB = 1 << 30
CHUNK = b"x" * (1 << 20)


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, rss_mib(self.pid))


class StreamingProtocol(UpstreamProtocol):
    """Answers with a 1 GiB body written under transport flow control (never buffered whole)."""

    remaining = 0
    paused = False

    def _send(self, response: bytes | list[bytes]) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % GIB)
        self.remaining = GIB
        self.resume_writing()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        while self.remaining > 0 and not self.paused and self.transport is not None:
            self.transport.write(CHUNK)
            self.remaining -= len(CHUNK)


@pytest.mark.slow
def test_one_gib_up_and_down_with_bounded_memory(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    streaming = TestUpstream()

    async def swap() -> None:
        assert streaming._server is not None
        streaming._server.close()
        streaming._server = await streaming.loop.create_server(
            lambda: StreamingProtocol(streaming), "127.0.0.1", streaming.port
        )

    asyncio.run_coroutine_threadsafe(swap(), streaming.loop).result(5)
    try:
        gw = gateway_factory(f"""
            [server]
            max_body_bytes = 2147483648
            [[listeners]]
            bind = "127.0.0.1:{{port}}"
            [upstreams.sink]
            targets = ["127.0.0.1:{upstream.port}"]
            [upstreams.source]
            targets = ["127.0.0.1:{streaming.port}"]
            [[routes]]
            name = "up"
            path = "/up"
            upstream = "sink"
            auth = "none"
            [[routes]]
            name = "down"
            path = "/down"
            upstream = "source"
            auth = "none"
            """)
        sampler = RssSampler(gw.worker_pid())
        sampler.start()
        upstream.count_body_only = True
        with connect(gw.port, timeout=60) as sock:
            sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % GIB)
            for _ in range(GIB // len(CHUNK)):
                sock.sendall(CHUNK)
            sock.settimeout(60)
            head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
        assert upstream.body_bytes == GIB

        received = 0
        with socket.create_connection(("127.0.0.1", gw.port), timeout=60) as sock:
            sock.sendall(b"GET /down HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            buf = bytearray(1 << 20)
            while True:
                n = sock.recv_into(buf)
                if not n:
                    break
                received += n
        sampler.stop.set()
        sampler.join()
        assert received > GIB  # head + 1 GiB body
        assert sampler.peak < 100, f"gateway RSS peaked at {sampler.peak:.1f} MiB"
        print(f"\n1 GiB up + 1 GiB down: gateway RSS peak {sampler.peak:.1f} MiB")
    finally:
        streaming.close()
