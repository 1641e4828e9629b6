"""The front protocol decides from the first bytes, however they are split across reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.codec.h2_guard import PREFACE
from fastgw.config.compiler import compile_config
from fastgw.proxy.context import WorkerContext
from fastgw.proxy.front import FrontProtocol, accept
from fastgw.proxy.http1 import ClientConnection
from fastgw.proxy.http2 import Http2Connection
from tests.support.configs import MINIMAL

PROXY_V1 = b"PROXY TCP4 192.0.2.10 10.0.0.1 40000 80\r\n"
HALF_HEAD = b"GET / HTTP/1.1\r\nHost: t\r\n"  # incomplete: nothing is forwarded, only decided


class FakeTransport:
    def __init__(self) -> None:
        self.protocol: Any = None
        self.written = bytearray()
        self.closed = False
        self.half_closed = False  # write_eof: a lingering close (proxy/linger.py) has begun

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("203.0.113.5", 50000) if name == "peername" else default

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.half_closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into reads at arbitrary points."""
    cuts = st.lists(st.integers(min_value=1, max_value=len(data) - 1), unique=True, max_size=6)
    return cuts.map(
        lambda at: [data[i:j] for i, j in zip([0, *sorted(at)], [*sorted(at), len(data)], strict=True)]
    )


def serve(reads: list[bytes], *, proxy: bool) -> tuple[FakeTransport, WorkerContext]:
    text = MINIMAL.replace('bind = "127.0.0.1:8080"', 'bind = "127.0.0.1:8080"\nproxy_protocol = true')
    snapshot = compile_config((text if proxy else MINIMAL).encode(), "front.toml")
    loop = asyncio.new_event_loop()
    try:
        worker = WorkerContext(snapshot, loop)
        front = accept(worker, snapshot.listeners[0])
        assert isinstance(front, FrontProtocol)  # h2c is on by default: the first bytes must be read
        transport = FakeTransport()
        transport.protocol = front
        front.connection_made(transport)  # type: ignore[arg-type]
        for data in reads:
            transport.protocol.data_received(data)
    finally:
        loop.close()
    return transport, worker


@given(st.data())
def test_h2c_preface_behind_a_proxy_header_in_any_split(data: st.DataObject) -> None:
    transport, worker = serve(data.draw(splits(PROXY_V1 + PREFACE)), proxy=True)
    h2 = transport.protocol
    assert isinstance(h2, Http2Connection)
    assert h2.client_ip == "192.0.2.10" and list(worker.connections) == [h2]
    assert transport.written  # the server's SETTINGS went out


@given(st.data())
def test_http1_behind_a_proxy_header_in_any_split(data: st.DataObject) -> None:
    transport, worker = serve(data.draw(splits(PROXY_V1 + HALF_HEAD)), proxy=True)
    conn = transport.protocol
    assert isinstance(conn, ClientConnection)
    assert conn.client_ip == "192.0.2.10" and conn.receiving is None and not transport.written
    assert list(worker.connections) == [conn]


@pytest.mark.parametrize("first", [b"P", b"PRI * HTTP/2.0\r\n"])
def test_a_preface_prefix_that_turns_out_http1_is_parsed_as_http1(first: bytes) -> None:
    transport, _ = serve([first, b"X" + b"\r\n"], proxy=False)
    conn = transport.protocol
    assert isinstance(conn, ClientConnection)
    assert b"400" in bytes(transport.written[:20])  # "PX..." is not a request line: HTTP/1.1 answers 400


def test_bad_proxy_header_is_refused() -> None:
    transport, _ = serve([b"GET / HTTP/1.1\r\n\r\n"], proxy=True)
    assert transport.written.startswith(b"HTTP/1.1 400") and transport.half_closed
