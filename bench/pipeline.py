"""The whole per-request Python path without sockets: client bytes in -> upstream bytes out -> response
bytes in -> client bytes out, through the real ClientConnection and UpstreamConnection on fake transports.

What it prints is fastgw's own CPU per request (no syscalls, no event loop), the number to shrink when the
wrk bench says fastgw is slower than the bare-proxy floor. ``--profile`` shows where it goes. With no loop
iterations there is nothing to batch writes for, so it runs with ``server.batch_writes = false`` (each
write made at once); batching (upstream/write_batch.py) adds two list appends a request and one
``call_soon`` a loop iteration.

    python bench/pipeline.py [--log] [--profile] [--route plain|key|chain]

``--route key`` adds an API key (X-API-Key, memoised), ``jwt`` an RS256 bearer token (verified-token cache);
``chain`` adds to the API key the bench's two rate limits
(a GCRA and a sliding window keyed by consumer, in a table of one shard), as run.py's full-chain scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import mmap
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastgw.config.compiler import compile_config
from fastgw.counters.table import CELL_INTS, COUNTERS
from fastgw.key_format import key_digest, new_key
from fastgw.policy.identity import IDENTITIES, KeyIdentity
from fastgw.process.worker import Worker
from fastgw.proxy.http1 import ClientConnection
from fastgw.upstream.connection import UpstreamConnection

PEPPER = b"pipeline-pepper-0123456789abcdef"
REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:9080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 19:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + b"x" * 100
)


class FakeTransport:
    """Just enough of asyncio.Transport for the data plane."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


ROUTES = {
    "plain": 'auth = "none"',
    "key": 'auth = "api_key"',
    "jwt": 'auth = "jwt"',
    "chain": """auth = "api_key"
limits = [
  { name = "burst", rate = 100000000, per = 1.0, key = "consumer", algorithm = "gcra", burst = 1000 },
  { name = "daily", rate = 1000000000, per = 86400.0, key = "consumer" },
]""",
}


JWT_ISSUER = """[jwt.issuers.bench]
issuer = "https://bench/"
audiences = ["bench"]
algorithms = ["RS256"]
public_keys = ["{state}/jwt-public.pem"]"""


def make_jwt(state: str) -> bytes:
    """An RS256 token whose public key the config above reads (written here before it is compiled)."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    Path(state, "jwt-public.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, spki))
    claims = {"iss": "https://bench/", "aud": "bench", "sub": "bench", "exp": int(time.time()) + 86400}
    return jwt.encode(claims, key, algorithm="RS256").encode()


async def run(n: int, log: bool, profile: bool, route: str) -> None:
    target = "/dev/null" if log else "off"
    state = tempfile.mkdtemp(prefix="fastgw-pipeline-")
    Path(state, "pepper").write_bytes(PEPPER)
    config = f"""
[server]
batch_writes = false
[[listeners]]
bind = "127.0.0.1:0"
[access_log]
target = "{target}"
[keys]
pepper = {{ file = "{state}/pepper" }}
[state]
dir = "{state}"
{JWT_ISSUER.format(state=state) if route == "jwt" else ""}
[upstreams.u]
targets = ["127.0.0.1:9"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
{ROUTES[route]}
""".encode()
    request = REQUEST
    if route == "jwt":
        request = REQUEST[:-2] + b"Authorization: Bearer " + make_jwt(state) + b"\r\n\r\n"
    elif route != "plain":
        key = new_key().encode()
        IDENTITIES.put(
            key_digest(PEPPER, key),
            KeyIdentity("k_1", "c_1", "acme", "", frozenset(), frozenset(), None, 0.0),
        )
        request = REQUEST[:-2] + b"X-API-Key: " + key + b"\r\n\r\n"
        COUNTERS.attach(mmap.mmap(-1, 4096 * CELL_INTS * 8), 0, 1, 4096)
    worker = Worker(compile_config(config, "pipeline.toml"))
    client = ClientConnection(worker, worker.holder.current.listeners[0])
    client_transport = FakeTransport(("127.0.0.1", 50000))
    client.connection_made(client_transport)  # type: ignore[arg-type]
    pool = worker.pools.group(worker.holder.current.routes[0].upstream).pools[0]
    upstream = UpstreamConnection(pool)
    upstream_transport = FakeTransport(("127.0.0.1", 9))
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    pool.idle.append((upstream, time.monotonic() + 3600))

    def one() -> None:
        client.data_received(request)
        upstream.data_received(RESPONSE)

    for _ in range(1000):
        one()
    assert client_transport.written[-1].endswith(b"x" * 100), client_transport.written[-1][:200]
    client_transport.written.clear()
    upstream_transport.written.clear()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    started = time.perf_counter()
    for _ in range(n):
        one()
        if len(client_transport.written) > 1000:
            client_transport.written.clear()
            upstream_transport.written.clear()
            worker.flush_records()
    elapsed = time.perf_counter() - started
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(int(os.environ.get("PIPELINE_STATS", "25")))
    print(
        f"{elapsed / n * 1e6:.2f} us per request through the Python data plane "
        f"(route {route}, log {'on' if log else 'off'})"
    )
    worker.sinks.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--log", action="store_true", help="access log on (to /dev/null), formatting included"
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--route", choices=sorted(ROUTES), default="plain")
    parser.add_argument("-n", type=int, default=50000)
    args = parser.parse_args()
    asyncio.run(run(args.n, args.log, args.profile, args.route))
    return 0


if __name__ == "__main__":
    sys.exit(main())
