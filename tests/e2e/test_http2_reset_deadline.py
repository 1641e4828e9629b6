"""Which deadline holds an HTTP/2 connection whose client reset every stream it opened (bench/soak.py
found such connections still open 5 s after its rapid-reset case stopped sending).

A rapid reset below ``http2.max_resets_per_second`` (or split across two of its one-second windows) is
not a flood, so the guard lets the connection live; then it must be held by the deadline of a
connection that has not completed a request (``server.header_timeout``), not by the keep-alive one
(``server.idle_timeout``, 60 s by default): streams the client reset itself were never answered.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.gateways import Gateway, basic_config
from tests.support.h2client import H2Client
from tests.support.upstreams import TestUpstream

HEADER_TIMEOUT = 0.5
IDLE_TIMEOUT = 30.0  # far beyond the waits below: a connection closed in time was not closed by it
TICK = 0.1  # the worker's deadline sweep (proxy/deadlines.py): a deadline fires up to one tick late


def reset_streams(client: H2Client, count: int) -> None:
    """Open ``count`` streams (heads without END_STREAM: each awaits a body) and reset each at once."""
    for _ in range(count):
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/r")]
        )
        client.conn.reset_stream(sid)
        client.flush()


def gateway(factory: Callable[..., Gateway], upstream: TestUpstream) -> Gateway:
    return factory(
        basic_config(
            upstream.port, server=f"header_timeout = {HEADER_TIMEOUT}\nidle_timeout = {IDLE_TIMEOUT}"
        )
    )


def test_connection_whose_streams_were_all_reset_gets_the_header_deadline(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway(gateway_factory, upstream)
    client = H2Client(gw.port, strict=False)
    try:
        reset_streams(client, 20)  # far below the flood limit (200 a second): not an attack the guard sees
        started = time.monotonic()
        closed = client.wait_closed(5)
        took = time.monotonic() - started
    finally:
        client.close()
    assert closed, "a connection that never completed a request was kept for idle_timeout"
    # header_timeout from the last reset, plus a tick, plus scheduling slack on a shared machine.
    assert took < HEADER_TIMEOUT + TICK + 1.5, took


def test_connection_with_an_answered_request_keeps_the_idle_deadline(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """The fix must not shorten keep-alive: once a request was answered, a reset stream leaves the
    connection to idle_timeout as before."""
    gw = gateway(gateway_factory, upstream)
    client = H2Client(gw.port, strict=False)
    try:
        assert client.request("/answered").status == 200
        reset_streams(client, 3)
        # Three header deadlines (and their ticks) pass: the connection is still open.
        assert not client.wait_closed(3 * (HEADER_TIMEOUT + TICK))
        assert client.request("/again").status == 200
    finally:
        client.close()
