"""bench/llm.py's own load generators, for what wrk cannot measure (wrk2 is not packaged here):

    python bench/llm_load.py open-loop PORT PATH BODY_FILE RATE SECONDS [HEADER ...]
    python bench/llm_load.py ttfb PORT PATH BODY_FILE SECONDS [HEADER ...]

``open-loop`` sends RATE requests a second on a schedule fixed in advance, whatever the answers do (so a
slow gateway cannot slow its own load down: no coordinated omission), over a pool of keep-alive
connections (a new one when all are busy), and times each request from the moment its bytes were written
to the moment its response was complete (``time.perf_counter_ns``). ``lag_p99_ms`` says how late the
sends ran against the schedule: a large lag means this generator, not the target, was the bottleneck.
``ttfb`` sends one streamed request at a time on one connection and times the first SSE event's bytes
(``data:`` or ``event:``) after the request was written. Both print one JSON object: p50/p99 in ms.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httptools
import uvloop

POOL_MAX = 512  # connections the open loop may open: a target this far behind is failing the row anyway


def request_bytes(port: int, path: str, body: bytes, headers: list[str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    head += headers
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time; ``done`` fires per complete response."""

    def __init__(
        self,
        on_done: Callable[[Connection, int], None],
        on_first_event: Callable[[Connection, int], None] | None = None,
    ) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.on_done = on_done
        self.on_first_event = on_first_event
        self.sent_ns = 0
        self.status = 0
        self.seen_event = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.seen_event = False
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if (
            not self.seen_event
            and self.on_first_event is not None
            and (b"data:" in body or b"event:" in body)
        ):
            self.seen_event = True
            self.on_first_event(self, time.perf_counter_ns())

    def on_message_complete(self) -> None:
        self.on_done(self, time.perf_counter_ns())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "count": 0}
    ordered = sorted(samples_ns)
    return {
        "p50_ms": ordered[len(ordered) // 2] / 1e6,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6,
        "count": len(ordered),
    }


async def open_loop(port: int, request: bytes, rate: float, seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    idle: list[Connection] = []
    latencies: list[int] = []
    lags: list[int] = []
    errors = 0
    outstanding = 0

    def done(conn: Connection, now: int) -> None:
        nonlocal errors, outstanding
        outstanding -= 1
        latencies.append(now - conn.sent_ns)
        if conn.status != 200:
            errors += 1
        idle.append(conn)

    async def connection() -> Connection:
        _, conn = await loop.create_connection(lambda: Connection(done), "127.0.0.1", port)
        return conn

    idle.extend([await connection() for _ in range(8)])
    opened = len(idle)
    interval_ns = int(1e9 / rate)
    start = time.perf_counter_ns() + 10_000_000
    total = int(rate * seconds)
    sent = 0
    while sent < total:
        now = time.perf_counter_ns()
        due = start + sent * interval_ns
        if now < due:
            await asyncio.sleep((due - now) / 1e9)
            continue
        if not idle:
            if opened >= POOL_MAX:
                errors += 1  # the target is this far behind: count it and skip the send
                sent += 1
                continue
            opened += 1
            idle.append(await connection())
        conn = idle.pop()
        lags.append(time.perf_counter_ns() - due)
        outstanding += 1
        conn.send(request)
        sent += 1
    deadline = time.monotonic() + 10
    while outstanding and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return {
        **percentiles(latencies),
        "lag_p99_ms": percentiles(lags)["p99_ms"],
        "errors": errors + outstanding,
        "connections": opened,
        "rate": rate,
    }


async def ttfb(port: int, request: bytes, seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    firsts: list[int] = []
    complete = asyncio.Event()
    errors = 0

    def first(conn: Connection, now: int) -> None:
        firsts.append(now - conn.sent_ns)

    def done(conn: Connection, now: int) -> None:
        nonlocal errors
        if conn.status != 200:
            errors += 1
        complete.set()

    _, conn = await loop.create_connection(lambda: Connection(done, first), "127.0.0.1", port)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        complete.clear()
        conn.send(request)
        await asyncio.wait_for(complete.wait(), 10)
    assert conn.transport is not None
    conn.transport.close()
    return {**percentiles(firsts), "errors": errors}


def main(argv: list[str]) -> int:
    mode, port, path, body_file = argv[0], int(argv[1]), argv[2], argv[3]
    body = Path(body_file).read_bytes()
    if mode == "open-loop":
        rate, seconds, headers = float(argv[4]), float(argv[5]), argv[6:]
        request = request_bytes(port, path, body, headers)
        result = uvloop.run(open_loop(port, request, rate, seconds))
    elif mode == "ttfb":
        seconds, headers = float(argv[4]), argv[5:]
        request = request_bytes(port, path, body, headers)
        result = uvloop.run(ttfb(port, request, seconds))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
