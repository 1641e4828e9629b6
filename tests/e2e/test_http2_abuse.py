"""HTTP/2 abuse: each hostile client (built on h2 and hyperframe) has its connection closed, with GOAWAY
where the protocol allows, the worker's memory stays bounded, and a well-behaved client on another
connection keeps succeeding throughout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PingFrame, SettingsFrame

from tests.support.gateways import Gateway, basic_config
from tests.support.h2client import H2Client
from tests.support.upstreams import SeenRequest, TestUpstream

ENHANCE_YOUR_CALM = int(ErrorCodes.ENHANCE_YOUR_CALM)
MiB = 1024 * 1024


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def bystander(port: int) -> Iterator[dict[str, int]]:
    """A well-behaved client on its own connection, requesting in a loop while the attack runs."""
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def run() -> None:
        client = H2Client(port)
        try:
            while not stop.is_set():
                try:
                    status = client.request("/bystander").status
                except AssertionError:
                    status = 0
                counts["ok" if status == 200 else "failed"] += 1
                time.sleep(0.01)
        finally:
            client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        time.sleep(0.2)
        stop.set()
        thread.join(10)
    assert counts["failed"] == 0 and counts["ok"] > 0, counts


def attacked(
    gw: Gateway, attack: Callable[[H2Client], None], *, code: int | None = ENHANCE_YOUR_CALM
) -> None:
    pid = gw.worker_pid(0)
    before = rss(pid)
    with bystander(gw.port):
        hostile = H2Client(gw.port, strict=False)
        try:
            attack(hostile)
            assert hostile.wait_closed(5), "the hostile connection was not closed"
        finally:
            hostile.close()
        if code is not None:
            assert hostile.goaway is not None and hostile.goaway.error_code == code, hostile.goaway
    grown = rss(pid) - before
    assert grown < 20 * MiB, f"worker RSS grew {grown / MiB:.1f} MiB"


@pytest.fixture
def gw(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> Gateway:
    return gateway_factory(basic_config(upstream.port))


def test_rapid_reset_closes_the_connection(gw: Gateway, upstream: TestUpstream) -> None:
    def attack(c: H2Client) -> None:
        for _ in range(2000):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(
                sid, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/r")]
            )
            c.conn.reset_stream(sid)
            try:
                c.flush()
            except OSError:
                return

    attacked(gw, attack)
    assert len(upstream.requests) < 400  # the flood was cut off, not served


def test_continuation_flood_is_cut_off_before_h2_buffers_it(gw: Gateway) -> None:
    def attack(c: H2Client) -> None:
        head = HeadersFrame(1)
        head.data = Encoder().encode([(b":method", b"GET"), (b":path", b"/")])
        c.raw(head.serialize())
        for _ in range(10000):
            cont = ContinuationFrame(1)
            cont.data = b"x" * 1000
            try:
                c.raw(cont.serialize())
            except OSError:
                return

    attacked(gw, attack)


@pytest.mark.parametrize("kind", ["settings", "ping"])
def test_control_frame_floods(gw: Gateway, kind: str) -> None:
    def attack(c: H2Client) -> None:
        frame = SettingsFrame(0) if kind == "settings" else PingFrame(0, opaque_data=b"12345678")
        batch = frame.serialize() * 500
        for _ in range(20):
            try:
                c.raw(batch)
            except OSError:
                return

    attacked(gw, attack)


def test_empty_data_frame_flood(gw: Gateway) -> None:
    def attack(c: H2Client) -> None:
        sid = c.start("/upload", method="POST", end=False)
        empty = DataFrame(sid, b"").serialize() * 1000
        try:
            c.raw(empty)
        except OSError:
            return

    attacked(gw, attack)


def test_hpack_bomb_is_refused(gw: Gateway) -> None:
    def attack(c: H2Client) -> None:
        # One 4 KB field enters the dynamic table; 200 one-byte references to it decode to 800 KB.
        bomb = [(b"x-bomb", b"a" * 4000)] * 200
        c.start("/bomb", headers=bomb)

    attacked(gw, attack)


def test_streams_beyond_the_concurrency_limit_are_refused(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    upstream.delay = 1.0
    gw = gateway_factory(basic_config(upstream.port, extra="[http2]\nmax_concurrent_streams = 10"))

    def attack(c: H2Client) -> None:
        # Sent before the server's SETTINGS are read, so the client side does not stop at 10. The
        # gateway may close the connection before the last ones are sent: a refusal too.
        for i in range(30):
            try:
                c.start(f"/slow/{i}")
            except OSError:
                return

    attacked(gw, attack, code=None)
    assert len(upstream.requests) <= 10 + 1  # (the bystander's)


def test_request_budget_ends_with_graceful_goaway(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port, extra="[http2]\nmax_requests_per_connection = 5"))
    client = H2Client(gw.port)
    statuses = [client.request(f"/n/{i}").status for i in range(5)]
    assert statuses == [200] * 5
    assert client.goaway is not None and client.goaway.error_code == 0 and client.goaway.last_stream_id == 9
    assert client.wait_closed(5)
    client.close()
    again = H2Client(gw.port)
    assert again.request("/n/after").status == 200
    again.close()


def test_client_that_stops_reading_is_dropped_with_bounded_memory(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    big = b"z" * (4 * MiB)

    def handler(req: SeenRequest) -> bytes:
        if req.target.startswith(b"/big"):
            return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(big), big)
        return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    upstream.handler = handler
    gw = gateway_factory(basic_config(upstream.port, server="send_timeout = 1.0"))

    def attack(c: H2Client) -> None:
        # Huge windows, then many large downloads that are never read.
        c.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        c.conn.increment_flow_control_window(2**31 - 1 - 65535)
        for i in range(20):
            c.start(f"/big/{i}")
        time.sleep(3)  # not reading: the gateway must give up on this client

    attacked(gw, attack, code=None)
