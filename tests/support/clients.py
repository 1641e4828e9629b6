"""Raw HTTP/1.1 clients on plain sockets: what a test sends and reads is exactly what is on the wire."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson


def connect(port: int, timeout: float = 5.0, source: str | None = None) -> socket.socket:
    """A TCP connection to the gateway; ``source`` picks another loopback address (127.0.0.2...) to
    appear as a different client."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the peer sends until it closes (fails if it does not close within ``timeout``)."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
        if time.monotonic() > deadline:
            raise AssertionError("peer did not close")
    return b"".join(chunks)


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> Any:
        return orjson.loads(self.body)


class ResponseReader:
    """Reads HTTP/1.1 responses off a socket one at a time, splitting pipelined responses exactly.

    A deliberately plain parser (Content-Length, chunked, no-body statuses, read-until-close) so the tests
    do not trust the same llhttp the gateway uses for what reached the client.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            raise AssertionError(f"timed out reading a response; have {self.buffer[:300]!r}") from None
        except ConnectionResetError:
            data = b""
        self.buffer += data
        return bool(data)

    def _take_line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed mid-response; have {self.buffer[:300]!r}")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed mid-body; wanted {n}, have {len(self.buffer)}")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read(self, timeout: float = 5.0, head: bool = False) -> Response:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed before a response head; have {self.buffer[:300]!r}")
        raw_head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = raw_head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        if 100 <= status < 200 and status != 101:
            return self.read(timeout, head)
        resp = Response(status, headers, b"", raw_head + b"\r\n\r\n")
        if head or status in (101, 204, 304):
            return resp
        te = resp.header(b"transfer-encoding")
        cl = resp.header(b"content-length")
        if te is not None and te.lower() == b"chunked":
            body = bytearray()
            while True:
                size = int(self._take_line(deadline).split(b";")[0], 16)
                if size == 0:
                    while self._take_line(deadline):
                        pass
                    break
                body += self._take(size, deadline)
                assert self._take(2, deadline) == b"\r\n", "chunk not followed by CRLF"
            resp.body = bytes(body)
        elif cl is not None:
            resp.body = self._take(int(cl), deadline)
        else:
            while self._fill(deadline):
                pass
            resp.body, self.buffer = self.buffer, b""
        return resp

    def closed(self, timeout: float = 3.0) -> bool:
        """True when the peer closes with nothing further to read."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                more = self._fill(deadline)
            except AssertionError:
                return False
            if not more:
                return not self.buffer


def request(
    port: int, raw: bytes, *, timeout: float = 5.0, head: bool = False, source: str | None = None
) -> Response:
    """Send raw request bytes on a new connection and read one response."""
    with connect(port, timeout, source) as sock:
        sock.sendall(raw)
        return ResponseReader(sock).read(timeout, head)


def get(
    port: int, path: str = "/", headers: str = "", method: str = "GET", source: str | None = None
) -> Response:
    return request(port, f"{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode(), source=source)
