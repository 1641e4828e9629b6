"""Soak: a gateway under mixed abusive and normal load; does each worker's memory stop growing?

    .venv/bin/python bench/soak.py                   # 600 s (the issue's 10 minutes), 2 workers
    .venv/bin/python bench/soak.py --duration 120    # a development run
    .venv/bin/python bench/soak.py --trace           # workers run tracemalloc; top growth per pass

A gateway (``fastgw run`` in a subprocess, 2 workers) fronts a small in-process test upstream. Client
threads, paced to ``--rate`` cases a second in all (default 150: the box is shared), pick cases at random:

* normal: keep-alive GETs and POSTs over several requests, on varying paths, hosts and headers; HTTP/2
  requests; API-key failures and rate-limited requests (the per-client state they create);
* abusive: every request-smuggling / malformed-input case of ``tests/support/malformed_requests.py``,
  oversized heads (431) and targets (414), clients that trickle half a head and vanish (closed or
  reset), HTTP/2 rapid reset, CONTINUATION floods, HPACK bombs and SETTINGS floods
  (``tests/e2e/test_http2_abuse.py``'s attacks, on ``tests/support/h2client.py``).

Client-controlled keys vary without end: source addresses across 127.0.0.0/8, X-Forwarded-For entries,
Host headers, paths, API keys, tenant headers and HTTP/2 field names are random per case, some of them a
few KiB long, so any structure keyed by client input that is not bounded (in entries and in bytes) grows
for the whole run.

Each worker's VmRSS (``/proc/PID/status``) is sampled every ``--sample`` seconds (default 10) and
reported per pass (``--pass-seconds``, default 60: one line a minute) with the growth of that pass.

Verdict (exit 1 when it fails): RSS must flatten. The run is cut in thirds. Start-up growth is
front-loaded (measured: +12 MiB in the first 20 s from lazily imported modules, pymalloc arenas, glibc's
heap reaching its working size and bounded caches filling, then +0-3 MiB per 20 s), while a leak grows in
proportion to the load, so about as much in the last third as in the first. Each worker's RSS may grow
over the last third by at most ``--max-late-growth`` MiB, or in runs under 300 s by at most
``max(--max-late-growth, first-third growth / 3)``. Why 2 MiB
(the default): by then the bounded caches are full or nearly so, and what is left is allocator noise:
glibc keeps up to TRIM_THRESHOLD (8 MiB, ``process/runtime.py``) of freed heap and pymalloc keeps partly
used arenas, so RSS moves by a MiB or so between samples with no leak (measured: +0.3 to +1.4 MiB over
the last 40 s of 120 s runs). Why a third of the first third: in a short run (CI: 60 s) the last third
still carries some start-up growth (measured up to +3.1 MiB against +11.6 in the first third), and a
linear leak would give a ratio near 1. The leak of issue 19 grew ~2 MiB per 300 abusive cases, about
1 MiB a second at this rate, far above both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httptools  # noqa: E402
from hpack import Encoder  # noqa: E402
from hyperframe.frame import ContinuationFrame, HeadersFrame, SettingsFrame  # noqa: E402

from tests.support.h2client import H2Client  # noqa: E402

try:  # the smuggling table of the codec tests, when the test tree is present
    from tests.support.malformed_requests import REFUSED

    MALFORMED = [raw for name, raw, _ in REFUSED if name != "connect"]
except ImportError:  # a compact stand-in
    H = b"Host: a\r\n"
    MALFORMED = [
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ]

MiB = 1024 * 1024
DEFAULT_MAX_LATE_GROWTH = 2.0  # MiB per worker over the last third, at least: see the module docstring
SHORT_RUN = 300.0  # seconds: shorter runs still carry start-up growth in their last third
CLIENT_TIMEOUT = 5.0  # seconds a client waits on the gateway before it counts a "timeout"
# Lines of the gateway's stderr that mean something went wrong: a child died or was killed by the hang
# watchdog, or an exception escaped (a Protocol callback's is logged by the event loop, not raised).
# (A child that exits 0 when the soak stops the gateway is no trouble.)
TROUBLE = re.compile(
    r"restarting in|exited with status [1-9]|killed by|stopped ticking|Traceback|Exception in|Fatal Python"
    r"|Fatal error|never retrieved|internal_error"
)


# -- the test upstream -----------------------------------------------------------------------------


class _Backend(asyncio.Protocol):
    """Answers every request with a small JSON body; keeps nothing between requests."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is not None:
            self.transport.write(
                b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
            )


def start_backend() -> int:
    loop = asyncio.new_event_loop()
    ready: list[int] = []
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(loop.create_server(_Backend, "127.0.0.1", 0))
        ready.append(server.sockets[0].getsockname()[1])
        started.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True, name="backend").start()
    started.wait(5)
    return ready[0]


# -- the gateway -----------------------------------------------------------------------------------

CONFIG = """
[server]
http1 = "httptools"
trusted_proxies = ["127.0.0.1/32"]
header_timeout = 3.0

[[listeners]]
bind = "127.0.0.1:{port}"

[access_log]
target = "{log}"

[upstreams.backend]
targets = ["127.0.0.1:{upstream}"]

[[routes]]
name = "main"
path = "/"
upstream = "backend"
auth = "none"

[[routes]]
name = "api"
host = "api.example"
path = "/v1"
upstream = "backend"
auth = "none"
methods = ["GET", "POST"]

[[routes]]
name = "wild"
host = "*.tenants.example"
path = "/"
upstream = "backend"
auth = "none"

[[routes]]
name = "keyed"
path = "/keyed"
upstream = "backend"
auth = "api_key"

[[routes]]
name = "limited"
path = "/limited"
upstream = "backend"
auth = "none"
limits = [
  {{ name = "per-ip", rate = 5, per = 10.0, key = "ip" }},
  {{ name = "tenant", rate = 5, per = 10.0, key = "header", header = "X-Tenant" }},
]

[keys]
pepper = {{ file = "{pepper}" }}

[state]
dir = "{state}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    def worker_pids(self, workers: int) -> dict[int, int]:
        text = self.stderr_path.read_text(errors="replace")
        pids: dict[int, int] = {}
        for slot in range(workers):
            found = re.findall(rf"worker {slot} started as pid (\d+)", text)
            if found:
                pids[slot] = int(found[-1])
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_gateway(tmp: Path, upstream: int, workers: int, trace: bool) -> Gateway:
    port = free_port()
    pepper = tmp / "pepper"
    pepper.write_bytes(os.urandom(32).hex().encode())
    config = tmp / "soak.toml"
    config.write_text(
        textwrap.dedent(CONFIG).format(
            port=port, upstream=upstream, log=tmp / "access.log", pepper=pepper, state=tmp / "state"
        )
    )
    ready = tmp / "ready"
    stderr_path = tmp / "gateway.stderr"
    env = {**os.environ, "STATE_DIRECTORY": str(tmp / "state")}
    if trace:
        env["FASTGW_TRACEMALLOC"] = "1"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fastgw",
                "run",
                str(config),
                "--ready-file",
                str(ready),
                "--workers",
                str(workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"soak: the gateway did not start:\n{stderr_path.read_text()}")
        time.sleep(0.05)
    gw = Gateway(proc, port, stderr_path)
    while len(gw.worker_pids(workers)) < workers:
        if time.monotonic() > deadline:
            raise SystemExit("soak: not every worker reported its pid")
        time.sleep(0.05)
    return gw


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# -- the cases -------------------------------------------------------------------------------------


def token(rng: random.Random, n: int = 8) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))


def some_ip(rng: random.Random) -> str:
    return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def loopback(rng: random.Random) -> str:
    """A random source address in 127.0.0.0/8 (Linux routes all of it to lo): a new client address."""
    return f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(2, 255)}"


def connect(port: int, source: str | None = None) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=CLIENT_TIMEOUT, source_address=(source, 0) if source else None
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bool]:
    """Read one response (Content-Length bodies only, as the gateway and the backend send): (status,
    keep-alive). Status 0: the connection closed first."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return 0, False
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            return status, False
        rest += data
    del buf[:]
    buf += rest[length:]
    return status, not close


def normal_keepalive(port: int, rng: random.Random) -> str:
    """A few GETs and POSTs on one connection, from a random source address, varying everything."""
    hosts = ["localhost", "api.example", f"{token(rng)}.tenants.example", f"{token(rng)}.example:8080"]
    with connect(port, loopback(rng)) as sock:
        buf = bytearray()
        status = 0
        for _ in range(rng.randrange(2, 6)):
            host = rng.choice(hosts)
            path = rng.choice(["/", "/v1/", "/static/", "/a/b/"]) + token(rng, rng.randrange(1, 30))
            extra = f"X-{token(rng, 6)}: {token(rng, 20)}\r\nAccept: */*\r\n"
            if rng.random() < 0.3:
                body = os.urandom(rng.randrange(10, 4000))
                head = f"POST {path}?q={token(rng)} HTTP/1.1\r\nHost: {host}\r\n{extra}"
                sock.sendall(head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            else:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
            status, alive = read_response(sock, buf)
            if not alive:
                break
    return f"normal {status}"


def failed_api_key(port: int, rng: random.Random) -> str:
    """A wrong API key from a client named by X-Forwarded-For: failed-authentication state per client."""
    key = "fgw_" + token(rng, 49)
    raw = f"GET /keyed/{token(rng)} HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: {some_ip(rng)}\r\n"
    with connect(port) as sock:
        sock.sendall(raw.encode() + f"Authorization: Bearer {key}\r\nConnection: close\r\n\r\n".encode())
        return f"api-key {read_response(sock, bytearray())[0]}"


def rate_limited(port: int, rng: random.Random) -> str:
    """A request on a route limited per client address and per tenant header, both random."""
    raw = (
        f"GET /limited/{token(rng, 4)} HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: {some_ip(rng)}\r\n"
        f"X-Tenant: {token(rng, 12)}\r\nConnection: close\r\n\r\n"
    )
    with connect(port) as sock:
        sock.sendall(raw.encode())
        return f"limited {read_response(sock, bytearray())[0]}"


def long_keys(port: int, rng: random.Random) -> str:
    """Client-chosen keys of a few KiB (all within the head limits): a Host, a path, a rate-limit header
    value, and over HTTP/2 a field name. Caches keyed by them must bound bytes, not only entries."""
    host = "h" + token(rng, rng.randrange(1000, 6000)) + ".example"
    raw = (
        f"GET /limited/{token(rng, rng.randrange(200, 2000))} HTTP/1.1\r\nHost: {host}\r\n"
        f"X-Tenant: {token(rng, rng.randrange(1000, 4000))}\r\nConnection: close\r\n\r\n"
    )
    with connect(port, loopback(rng)) as sock:
        sock.sendall(raw.encode())
        status = read_response(sock, bytearray())[0]
    client = H2Client(port, timeout=CLIENT_TIMEOUT)
    try:
        name = b"x-" + token(rng, rng.randrange(500, 3000)).encode()
        client.request("/h2/long", headers=[(name, b"v")])
    finally:
        client.close()
    return f"long-keys {status}"


def malformed(port: int, rng: random.Random) -> str:
    """A smuggling / malformed request followed by a valid one that must never be served."""
    raw = rng.choice(MALFORMED) + b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    with connect(port, loopback(rng)) as sock:
        sock.sendall(raw)
        return f"malformed {read_response(sock, bytearray())[0]}"


def oversized(port: int, rng: random.Random) -> str:
    """A head past max_header_bytes (431) or a target past max_target_bytes (414)."""
    if rng.random() < 0.5:
        raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * rng.randrange(17_000, 40_000) + b"\r\n\r\n"
    else:
        raw = b"GET /" + b"p" * rng.randrange(8_200, 12_000) + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    with connect(port, loopback(rng)) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            return "oversized reset"
        return f"oversized {read_response(sock, bytearray())[0]}"


def slow_vanish(port: int, rng: random.Random) -> str:
    """Trickle part of a head (and maybe a body), then vanish: a close or a reset (SO_LINGER 0)."""
    raw = f"POST /{token(rng)} HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nX-Slow: {token(rng, 40)}\r\n"
    if rng.random() < 0.5:
        raw += "\r\n" + "b" * 1000
    data = raw.encode()
    sock = connect(port, loopback(rng))
    try:
        for i in range(0, len(data), 40):
            sock.sendall(data[i : i + 40])
            time.sleep(rng.uniform(0.01, 0.05))
        if rng.random() < 0.5:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    finally:
        sock.close()
    return "slow vanished"


def h2_normal(port: int, rng: random.Random) -> str:
    client = H2Client(port, timeout=CLIENT_TIMEOUT)
    try:
        statuses = []
        for _ in range(rng.randrange(1, 6)):
            path = f"/h2/{token(rng, rng.randrange(1, 20))}"
            headers = [(b"x-" + token(rng, 5).encode(), token(rng, 16).encode())]
            authority = rng.choice([b"localhost", b"api.example", token(rng).encode() + b".tenants.example"])
            statuses.append(client.request(path, headers=headers, authority=authority).status)
        return f"h2 {statuses[-1]}"
    finally:
        client.close()


def _h2_attack(port: int, attack: Callable[[H2Client], None], name: str) -> str:
    client = H2Client(port, strict=False, timeout=CLIENT_TIMEOUT)
    try:
        try:
            attack(client)
        except OSError:
            pass
        closed = client.wait_closed(CLIENT_TIMEOUT)
        return f"h2-abuse {name} " + ("closed" if closed else "still open")
    finally:
        client.close()


def h2_rapid_reset(port: int, rng: random.Random) -> str:
    def attack(c: H2Client) -> None:
        for _ in range(rng.randrange(200, 600)):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(
                sid,
                [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/r")],
            )
            c.conn.reset_stream(sid)
            c.flush()

    return _h2_attack(port, attack, "rapid-reset")


def h2_continuation_flood(port: int, rng: random.Random) -> str:
    def attack(c: H2Client) -> None:
        head = HeadersFrame(1)
        head.data = Encoder().encode([(b":method", b"GET"), (b":path", b"/")])
        c.raw(head.serialize())
        cont = ContinuationFrame(1)
        cont.data = b"x" * 1000
        frame = cont.serialize()
        for _ in range(rng.randrange(100, 400)):
            c.raw(frame)

    return _h2_attack(port, attack, "continuation")


def h2_hpack_bomb(port: int, rng: random.Random) -> str:
    def attack(c: H2Client) -> None:
        c.start("/bomb", headers=[(b"x-bomb", b"a" * 4000)] * 200)

    return _h2_attack(port, attack, "hpack-bomb")


def h2_settings_flood(port: int, rng: random.Random) -> str:
    def attack(c: H2Client) -> None:
        batch = SettingsFrame(0).serialize() * 500
        for _ in range(20):
            c.raw(batch)

    return _h2_attack(port, attack, "settings")


# (weight, case): normal traffic is about half of the cases.
CASES: list[tuple[int, Callable[[int, random.Random], str]]] = [
    (30, normal_keepalive),
    (10, h2_normal),
    (8, failed_api_key),
    (8, rate_limited),
    (8, long_keys),
    (14, malformed),
    (6, oversized),
    (6, slow_vanish),
    (3, h2_rapid_reset),
    (3, h2_continuation_flood),
    (3, h2_hpack_bomb),
    (2, h2_settings_flood),
]


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Load:
    port: int
    rate: float
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_at: float = field(default_factory=time.monotonic)

    def _pace(self) -> None:
        """One case every 1/rate seconds across all threads."""
        with self.lock:
            at = self.next_at = max(self.next_at + 1.0 / self.rate, time.monotonic() - 1.0)
        delay = at - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        weights = [w for w, _ in CASES]
        cases = [c for _, c in CASES]
        while not self.stop.is_set():
            self._pace()
            case = rng.choices(cases, weights)[0]
            try:
                outcome = case(self.port, rng)
            except TimeoutError:
                outcome = f"{case.__name__} timeout"
            except (OSError, AssertionError, ValueError, IndexError):
                outcome = f"{case.__name__} error"
            with self.lock:
                self.outcomes[outcome] += 1


def trouble(stderr: str) -> list[str]:
    """The gateway's stderr lines that say a child died or an exception escaped, with their tracebacks."""
    lines = stderr.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if TROUBLE.search(line) and not line.startswith("  "):
            out.append(line)
            out.extend(following for following in lines[i + 1 : i + 40] if following.startswith("  "))
    return out


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="fastgw-soak-") as tmpdir:
        tmp = Path(tmpdir)
        gw = start_gateway(tmp, start_backend(), args.workers, args.trace)
        code = 2
        try:
            code = soak(gw, args)
        finally:
            gw.stop()
            stderr = gw.stderr_path.read_text(errors="replace")
            if args.trace:
                for line in stderr.splitlines():
                    if "memory probe" in line or line.startswith("  "):
                        print(line)
            found = trouble(stderr)
            if found:
                print("soak: the gateway's stderr says:")
                print("\n".join("  | " + line for line in found[:200]))
                code = code or 3
            if code:
                # What went wrong must outlive the temporary directory: the config, the gateway's stderr
                # (every child's), the access log and the state dir, in one known place.
                keep = Path(args.keep_dir)
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(tmp, keep, ignore=shutil.ignore_patterns("*.sock"), dirs_exist_ok=True)
                print(f"soak: failed (exit {code}); the gateway's files are kept in {keep}")
        return code


def soak(gw: Gateway, args: argparse.Namespace) -> int:
    pids = gw.worker_pids(args.workers)
    load = Load(gw.port, args.rate)
    threads = [
        threading.Thread(target=load.client, args=(args.seed + i,), daemon=True) for i in range(args.threads)
    ]
    start = time.monotonic()
    samples: list[tuple[float, dict[int, float]]] = [(0.0, {s: rss_mib(p) for s, p in pids.items()})]
    print(f"soak: {args.duration:.0f} s, {args.workers} workers {pids}, {args.rate:.0f} cases/s at most")
    print("  t(s)  " + "  ".join(f"worker {s} RSS (growth this pass)" for s in pids))
    for t in threads:
        t.start()
    next_pass = args.pass_seconds
    last_pass = samples[0][1]
    try:
        while (elapsed := time.monotonic() - start) < args.duration:
            time.sleep(min(args.sample, args.duration - elapsed))
            now = time.monotonic() - start
            for slot, pid in pids.items():
                if gw.worker_pids(args.workers).get(slot) != pid:
                    print(f"soak: worker {slot} (pid {pid}) was replaced: a crash, not a soak result")
                    return 2
            samples.append((now, {s: rss_mib(p) for s, p in pids.items()}))
            if now >= next_pass - 0.5 or now >= args.duration - 0.5:
                rss = samples[-1][1]
                print(
                    f"  {now:5.0f}  "
                    + "  ".join(f"{rss[s]:8.1f} MiB ({rss[s] - last_pass[s]:+5.1f})" for s in pids)
                )
                last_pass = rss
                next_pass += args.pass_seconds
                if args.trace:
                    for pid in pids.values():
                        os.kill(pid, signal.SIGUSR2)
    finally:
        load.stop.set()
        for t in threads:
            t.join(CLIENT_TIMEOUT * 3)
    total = sum(load.outcomes.values())
    print(f"soak: {total} cases ({total / args.duration:.0f}/s); outcomes:")
    for outcome, n in sorted(load.outcomes.items()):
        print(f"  {n:7d}  {outcome}")
    return verdict(samples, pids, args.max_late_growth)


def verdict(samples: list[tuple[float, dict[int, float]]], pids: dict[int, int], limit: float) -> int:
    """Exit status: 0 when each worker's RSS grew less than ``limit`` MiB over the last third of the run
    (short runs: ``max(limit, first third / 3)``; see the module docstring for both numbers)."""
    end = samples[-1][0]
    early = [s for s in samples if s[0] <= end / 3 + 0.5]
    late = [s for s in samples if s[0] >= end * 2 / 3 - 0.5]
    first = late[0] if len(late) > 1 else samples[0]
    failed = False
    for slot in pids:
        start_rss, end_rss = samples[0][1][slot], samples[-1][1][slot]
        warmup = early[-1][1][slot] - start_rss
        allowed = max(limit, warmup / 3) if end < SHORT_RUN else limit
        grew = end_rss - first[1][slot]
        ok = grew < allowed
        failed |= not ok
        print(
            f"soak: worker {slot}: {start_rss:.1f} -> {end_rss:.1f} MiB; first third {warmup:+.1f} MiB, "
            f"last third ({first[0]:.0f}-{end:.0f} s) {grew:+.1f} MiB: "
            f"{'flat' if ok else 'STILL GROWING'} (allowed {allowed:.1f} MiB)"
        )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--duration",
        type=float,
        default=600.0,
        help="seconds of load (default 600; at least 60, so each third has samples)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=150.0, help="cases a second, all threads together")
    parser.add_argument("--threads", type=int, default=8, help="client threads (slow clients hold one)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--pass-seconds", type=float, default=60.0, help="seconds per reported pass")
    parser.add_argument(
        "--max-late-growth",
        type=float,
        default=DEFAULT_MAX_LATE_GROWTH,
        help="MiB a worker may grow over the last third (at least; see the docstring)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trace", action="store_true", help="tracemalloc in the workers (slower)")
    parser.add_argument(
        "--keep-dir",
        default=str(Path(tempfile.gettempdir()) / "fastgw-soak-failed"),
        help="where a failed run's gateway files (stderr, access log, state dir) are kept "
        "(default: $TMPDIR/fastgw-soak-failed, replaced by each failed run)",
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
