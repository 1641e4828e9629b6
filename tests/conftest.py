"""Shared fixtures: real sockets on 127.0.0.1 with OS-assigned ports, a gateway in a subprocess, and a
wire-true test upstream that records what reached it and answers with exact bytes.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import orjson
import pytest
from hypothesis import HealthCheck, settings

from tests.support.routes import inject_policy  # noqa: F401  (a fixture, shared by every test)

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

HTTP1_BACKENDS = ["httptools", "h11"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a stale build: a compiled module older than its source would hide the source's
    changes (fastgw/native.py). CI must also run the compiled build, never the .py files by accident."""
    from fastgw.native import status

    states = status()
    stale = [name for name, state in states.items() if state == "stale"]
    if stale:
        pytest.exit(
            f"compiled modules older than their source: {', '.join(stale)}; rebuild with "
            "`pip install -e .` (scripts/dev.sh test does it)",
            returncode=2,
        )
    if os.environ.get("CI") == "true" and "source" in states.values():
        pytest.exit(f"CI runs the compiled build, but some modules are not compiled: {states}", returncode=2)


@pytest.fixture(autouse=True)
def _collect_after_test() -> Iterator[None]:
    """Collect garbage after each test, so a leaked socket, transport or loop raises its ResourceWarning
    (an error under filterwarnings=error) in the test that leaked it rather than in a later one."""
    yield
    gc.collect()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes (then fail, saying what)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- the test upstream ---------------------------------------------------------------------------------


@dataclass
class SeenRequest:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def all(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]


# A handler returns the raw response, or a list of pieces written 50 ms apart, or None to hang up.
Handler = Callable[[SeenRequest], "bytes | list[bytes] | None"]


def json_response(body: bytes) -> bytes:
    """A 200 response carrying a JSON body, as raw bytes for a test upstream's handler."""
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def ok_response(req: SeenRequest) -> bytes:
    return json_response(
        orjson.dumps({"method": req.method.decode(), "target": req.target.decode(), "len": len(req.body)})
    )


class _UpstreamProtocol(asyncio.Protocol):
    def __init__(self, server: TestUpstream) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current: SeenRequest | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.tunnel = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.server._transports.add(self.transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._transports.discard(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            assert self.transport is not None
            self.transport.write(b"echo:" + data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.tunnel = True
            rest = data[exc.args[0] :]
            if rest and self.transport is not None:
                self.transport.write(b"echo:" + rest)
        except httptools.HttpParserError:
            self.server.parse_errors += 1
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        if self.server.count_body_only:
            self.server.body_bytes += len(body)
        else:
            self.body += body

    def on_message_complete(self) -> None:
        req = SeenRequest(self.parser.get_method(), self.url, self.headers, bytes(self.body))
        self.server.requests.append(req)
        response = self.server.handler(req)
        if self.transport is None:
            return
        if response is None:
            self.transport.close()  # the handler wants the connection dropped without an answer
            return
        delay = self.server.delay
        if delay:
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self._send, response)
        else:
            self._send(response)

    def _send(self, response: bytes | list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if isinstance(response, list):
            first, *rest = response
            self.transport.write(first)
            if rest:
                asyncio.get_running_loop().call_later(0.05, self._send, rest)
                return
        else:
            self.transport.write(response)
        if self.server.close_after_response:
            self.transport.close()


class TestUpstream:
    """An HTTP/1.1 backend on its own loop in a thread; ``handler`` maps a request to raw response bytes."""

    __test__ = False

    def __init__(self, ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.ssl_context = ssl_context
        self._bind_port = port  # 0: any free port; a given one brings a closed upstream back on it
        self.requests: list[SeenRequest] = []
        self.handler: Handler = ok_response
        self.delay = 0.0
        self.close_after_response = False
        self.count_body_only = False
        self.body_bytes = 0
        self.connections = 0
        self.parse_errors = 0
        self._transports: set[asyncio.Transport] = set()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self._server = await self.loop.create_server(
                lambda: _UpstreamProtocol(self), "127.0.0.1", self._bind_port, ssl=self.ssl_context
            )
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            # Let accepts already queued run their connection_made, then drop every connection, so no
            # transport outlives the test (an unclosed one is a ResourceWarning in a later test).
            await asyncio.sleep(0.01)
            for transport in list(self._transports):
                transport.abort()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class RedisServer:
    """A real redis-server on a free port, with no persistence; ``stop``/``start`` simulate an outage."""

    __test__ = False

    def __init__(self, tmp_path: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            # Never a skip: a missing service is a failure (scripts/dev.sh installs it).
            raise AssertionError("redis-server is not installed: run scripts/dev.sh system test")
        self.binary = binary
        self.port = free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.dir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ready() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(ready, 10, "redis-server to answer PING")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: no goodbye to clients, connections just break."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def upstream() -> Iterator[TestUpstream]:
    server = TestUpstream()
    yield server
    server.close()


# -- the gateway under test ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    config: Path
    access_log: Path
    stderr_path: Path
    state: Path
    extra_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_records(self) -> list[dict[str, Any]]:
        if not self.access_log.exists():
            return []
        return [orjson.loads(line) for line in self.access_log.read_bytes().splitlines() if line]

    def wait_log(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return wait_until(  # type: ignore[no-any-return]
            lambda: (r := self.log_records()) and len(r) >= count and r,
            timeout,
            f"{count} access-log records",
        )

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def worker_pid(self, slot: int = 0) -> int:
        """The pid of worker ``slot`` (the newest, after restarts), from the supervisor's log."""
        pids = re.findall(rf"worker {slot} started as pid (\d+)", self.stderr())
        assert pids, f"no worker {slot} in the log:\n{self.stderr()}"
        return int(pids[-1])

    def control_pid(self) -> int:
        pids = re.findall(r"control started as pid (\d+)", self.stderr())
        assert pids, f"no control process in the log:\n{self.stderr()}"
        return int(pids[-1])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_gateway(
    tmp_path: Path,
    body: str,
    *,
    name: str = "gw",
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
    workers: int = 1,
    args: tuple[str, ...] = (),
) -> Gateway:
    """Start ``fastgw run`` (supervisor, control process, ``workers`` workers) on a config whose text is
    ``body`` with {port}, {log} and {state} filled in. Each gateway gets its own state directory."""
    port = free_port()
    state = tmp_path / f"{name}-state"
    log = tmp_path / f"{name}-access.log"
    config = tmp_path / f"{name}.toml"
    text = textwrap.dedent(body).replace("{port}", str(port)).replace("{log}", str(log))
    config.write_text(text.replace("{state}", str(state)))
    ready = tmp_path / f"{name}.ready"
    stderr_path = tmp_path / f"{name}.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "fastgw", "run", str(config), "--ready-file", str(ready)),
                *("--workers", str(workers), *args),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "STATE_DIRECTORY": str(state), **(env or {})},
            preexec_fn=preexec,  # noqa: PLW1509 - only resource limits, set before exec
        )
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, 15, "the gateway to listen")
    except AssertionError:
        proc.kill()
        raise
    if proc.poll() is not None:
        raise AssertionError(f"gateway exited {proc.returncode}: {stderr_path.read_text()}")
    return Gateway(proc, port, config, log, stderr_path, state=state)


def basic_config(
    upstream_port: int, *, http1: str = "httptools", server: str = "", route: str = "", extra: str = ""
) -> str:
    return f"""
        [server]
        http1 = "{http1}"
        {server}

        [[listeners]]
        bind = "127.0.0.1:{{port}}"

        [access_log]
        target = "{{log}}"

        [upstreams.backend]
        targets = ["127.0.0.1:{upstream_port}"]

        [[routes]]
        name = "main"
        path = "/"
        upstream = "backend"
        auth = "none"
        {route}
        {extra}
        """


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def factory(body: str, **kw: Any) -> Gateway:
        gw = start_gateway(tmp_path, body, name=f"gw{len(started)}", **kw)
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        code = gw.stop()
        assert code == 0, f"gateway exited with {code}; stderr:\n{gw.stderr()}"


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """An admin token and a key pepper, as files a config can reference."""
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "admin.token").write_text("admin-token-for-keys-tests-0c5e9a7d31f4\n")
    (d / "pepper").write_bytes(os.urandom(32).hex().encode())
    return d


@pytest.fixture(params=HTTP1_BACKENDS)
def http1_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway], upstream: TestUpstream, http1_backend: str) -> Gateway:
    """A gateway with one catch-all public route to the test upstream, on each parser backend."""
    return gateway_factory(basic_config(upstream.port, http1=http1_backend))


# -- raw clients ---------------------------------------------------------------------------------------


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
