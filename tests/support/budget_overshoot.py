"""A spend budget hammered by concurrent streams through several gateway nodes that share one Redis: the
setup of bench/budget_overshoot.py (issue 23's bar, full size) and of its CI-size end-to-end test.

Each node is a ``fastgw run`` with ``[rate_limits.redis]`` on the same redis-server, in front of the fake
OpenAI provider (fake_openai.py, in a thread of the caller): one llm route, ``auth = "none"``, one budget
keyed by the whole route with ``usd_per_day``, and the model ``gpt-4o`` priced by the shipped table. The
clients stream chat completions with ``max_tokens`` over keep-alive connections, node by node in turn,
until the budget refuses them all. What the fake answered, priced the same way, is the real spend.

``{port}``, ``{log}`` and ``{state}`` are left for ``start_gateway`` to fill in.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import redis as redis_client

from tests.support.cli import fastgw
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateways import Gateway

MODEL = "gpt-4o"
PROVIDER_KEY = "sk-fake-budget-0123456789"
# gpt-4o's shipped price (fastgw/data/prices.toml), USD per million tokens.
INPUT_USD, OUTPUT_USD = 2.50, 10.0
MAX_TOKENS = 7  # the fake's answer is 7 words, one token each: the answer's estimate is exact
BYTES_PER_TOKEN = 4  # fastgw/ai/budgets.py's prompt estimate: body bytes / 4 + 1


def node_config(
    fake_port: int, redis_url: str, usd_per_day: float, flush_interval: float, secrets: Path
) -> str:
    (secrets / "provider.key").write_text(PROVIDER_KEY + "\n")
    return f"""
[[listeners]]
bind = "127.0.0.1:{{port}}"

[upstreams.fake]
targets = ["127.0.0.1:{fake_port}"]
max_idle = 256

[[llm.providers]]
name = "oa"
kind = "openai"
upstream = "fake"
base_path = "/v1"
api_key = {{ file = "{secrets / "provider.key"}" }}

[[llm.models]]
name = "{MODEL}"
targets = [{{ provider = "oa", model = "{MODEL}" }}]

[[routes]]
name = "llm"
path = "/v1"
kind = "llm"
auth = "none"

[[routes.handler.budgets]]
name = "daily"
key = "route"
usd_per_day = {usd_per_day}

[rate_limits.redis]
url = "{redis_url}"
flush_interval = {flush_interval}

[access_log]
target = "{{log}}"
"""


def start_fake(chunk_delay: float) -> FakeOpenAI:
    """The fake provider in a thread: each stream's 7 pieces ``chunk_delay`` apart."""
    fake = FakeOpenAI(api_key=PROVIDER_KEY).start_in_thread()
    fake.chunk_delay = chunk_delay
    return fake


def request_body(prompt_words: int) -> bytes:
    """A streamed chat request: ``prompt_words`` words of 4 letters (5 bytes with the space: the fake
    counts a token a word, the estimate a token per 4 bytes, so it estimates a little over, as for
    English text) and ``max_tokens``."""
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": " ".join(["word"] * prompt_words)}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return json.dumps(request).encode()


def cost_usd(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * INPUT_USD + completion_tokens * OUTPUT_USD) / 1e6


def estimate_usd(body: bytes) -> float:
    """What the gateway reserves for one request (docs/llm-budgets.md, "How a request is counted")."""
    return cost_usd(len(body) // BYTES_PER_TOKEN + 1, MAX_TOKENS)


def provider_spend(fake: FakeOpenAI) -> tuple[int, float, float]:
    """The answers the fake sent, their total cost and the largest one's."""
    costs = [
        cost_usd(a.usage.get("prompt_tokens", 0), a.usage.get("completion_tokens", 0))
        for a in list(fake.answers)
    ]
    return len(costs), sum(costs), max(costs, default=0.0)


def ledger_usd(gw: Gateway) -> float:
    """The node's ledger total (read after it stopped: the ledger flushes on shutdown)."""
    out = fastgw(
        "usage", "--config", str(gw.config), "--format", "json", env={"STATE_DIRECTORY": str(gw.state)}
    )
    assert out.returncode == 0, f"fastgw usage failed: {out.stderr}"
    return sum(float(row.get("cost_usd") or 0.0) for row in json.loads(out.stdout))


def redis_usd(url: str) -> float:
    """The day's spend as Redis holds it: micro-USD in the budget's window keys (the only counted keys)."""
    with redis_client.Redis.from_url(url) as store:
        keys = [k for k in store.keys("fgw:rl:*") if k != b"fgw:rl:participants"]
        return sum(int(v or 0) for v in store.mget(keys)) / 1e6 if keys else 0.0


class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; a response ends at its last byte."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("connection lost"))

    def _fail(self, exc: Exception) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)


@dataclass
class Hammer:
    """``streams`` clients, client i on node ``i % len(ports)``, until no request has been admitted for
    ``quiet`` seconds after the first refusal (or ``deadline`` seconds in all)."""

    ports: list[int]
    streams: int
    body: bytes
    quiet: float = 1.0
    deadline: float = 120.0
    admitted: int = 0
    refused: int = 0
    other: dict[int, int] = field(default_factory=dict)  # any other status -> count
    errors: int = 0
    durations: list[float] = field(default_factory=list)  # seconds per admitted stream
    first_refusal: float = 0.0
    last_admission: float = 0.0
    started: float = 0.0

    def raw(self) -> bytes:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body

    def finished(self, now: float) -> bool:
        if now - self.started > self.deadline:
            return True
        return bool(self.first_refusal) and now - max(self.last_admission, self.first_refusal) > self.quiet

    async def client(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        port = self.ports[index % len(self.ports)]
        raw = self.raw()
        conn: _Client | None = None
        while not self.finished(time.monotonic()):
            try:
                if conn is None or conn.transport is None or conn.transport.is_closing():
                    _, conn = await loop.create_connection(_Client, "127.0.0.1", port)
                conn.done = loop.create_future()
                sent = time.monotonic()
                assert conn.transport is not None
                conn.transport.write(raw)
                status = await asyncio.wait_for(conn.done, 30)
            except (TimeoutError, OSError, ConnectionError, httptools.HttpParserError):
                self.errors += 1
                conn = None
                await asyncio.sleep(0.05)
                continue
            now = time.monotonic()
            if status == 200:
                self.admitted += 1
                self.last_admission = now
                self.durations.append(now - sent)
            elif status == 429:
                self.refused += 1
                self.first_refusal = self.first_refusal or now
                await asyncio.sleep(0.01)  # a refused client comes back at once, as a busy one would
            else:
                self.other[status] = self.other.get(status, 0) + 1
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    def run(self) -> None:
        async def drive() -> None:
            self.started = time.monotonic()
            await asyncio.gather(*(self.client(i) for i in range(self.streams)))

        asyncio.run(drive())


def stated_bound_usd(
    streams: int, flush_interval: float, shortest_stream_s: float, largest_usd: float
) -> float:
    """docs/llm-budgets.md's cluster bound for this load: an admission can miss what the other streams
    were admitted in the last 2 flush intervals (the other participant's flush sends it, the next flush of
    this one reads it: rtt on 127.0.0.1 is well under a millisecond), each at most once per stream length,
    each at most the largest answer's cost (an estimate at least the real cost keeps the rest in the
    budget)."""
    staleness = 2 * flush_interval
    per_stream = max(1, int(staleness // max(shortest_stream_s, 1e-3)) + 1)
    return (streams - 1) * per_stream * largest_usd
