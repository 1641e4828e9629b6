"""Clients that vanish at every stage must not leak pool slots, connections or memory.

With an upstream pool of 2 connections, a leaked slot shows as 503s within a few requests, so after
each round of aborted exchanges a run of normal requests must all succeed promptly.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

from tests.support.clients import connect, get
from tests.support.gateways import Gateway, basic_config
from tests.support.memory import rss_mib
from tests.support.upstreams import TestUpstream


def _abort(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    sock.close()


ABORTS = [
    ("after connect", b""),
    ("mid head", b"GET /a HTTP/1.1\r\nHost: t\r\nX-Part"),
    ("after head", b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("mid body", b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000),
    (
        "mid chunked body",
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789",
    ),
    ("pipelined burst", b"GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n" * 5),
    (
        "expect then vanish",
        b"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
    ),
    (
        "websocket then vanish",
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ),
]


def test_aborted_clients_leak_nothing(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    def handler(req):  # type: ignore[no-untyped-def]
        if req.target == b"/ws":
            return b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
        body = b"y" * 200_000 if req.target == b"/big" else b"ok"
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    upstream.handler = handler
    upstream.delay = 0.02
    gw = gateway_factory(
        basic_config(upstream.port, extra="", server="max_pipelined = 4").replace(
            'targets = ["127.0.0.1:', 'max_connections = 2\nqueue_timeout = 2.0\ntargets = ["127.0.0.1:'
        )
    )
    rng = random.Random(7)
    assert get(gw.port, "/warm").status == 200
    baseline = rss_mib(gw.worker_pid())
    for round_no in range(5):
        for _name, data in ABORTS * 3:
            sock = connect(gw.port)
            if data:
                sock.sendall(data)
            time.sleep(rng.choice([0, 0.005, 0.03]))
            _abort(sock)
        # A client that stops reading a big response, then vanishes.
        sock = connect(gw.port)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.05)
        _abort(sock)
        started = time.monotonic()
        statuses = [get(gw.port, f"/after-{round_no}-{i}").status for i in range(6)]
        elapsed = time.monotonic() - started
        assert statuses == [200] * 6, f"round {round_no}: {statuses} (a leaked pool slot gives 503)"
        assert elapsed < 2.0, f"round {round_no}: 6 requests took {elapsed:.2f}s"
    grown = rss_mib(gw.worker_pid()) - baseline
    print(f"\nRSS growth over 5 chaos rounds: {grown:.1f} MiB")
    assert grown < 20
