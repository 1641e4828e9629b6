"""Issue 23's ledger bar: after N mixed LLM requests (streaming and not, a priced and an unpriced model,
two consumers) through a 4-worker gateway, one worker killed -9 midway, the ledger's totals equal what the
fake provider served, less at most what one flush interval can hold (counted, not assumed).

    python bench/ledger_exact.py [--requests 100000] [--workers 4] [--concurrency 32] [--kill-at 0.5]

Prints one JSON object: the provider's totals, the ledger's, the requests lost and the bound they must
stay within (requests completed in ``FLUSH_SECONDS`` + a tick before the kill, plus the requests cut off
by it); exit status 0 when 0 <= lost <= bound and no token count exceeds the provider's, 1 otherwise.
The load is raw HTTP/1.1 over keep-alive connections (httptools), so the client is not the bottleneck;
the fake provider (tests/support/fake_openai.py) runs in a thread of this process and counts each answer.
Run it on a quiet machine: the CI runs the same checks at a few hundred requests
(tests/e2e/test_llm_ledger.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httptools  # noqa: E402

from fastgw.sinks.ledger_book import FLUSH_SECONDS  # noqa: E402
from tests.support.api_keys import issue  # noqa: E402
from tests.support.cli import fastgw  # noqa: E402
from tests.support.gateways import start_gateway  # noqa: E402
from tests.support.ledger import ledger_config, mini_cost_usd, served, start_fake  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

ADMIN_TOKEN = "admin-token-for-ledger-bench-3f9a1c"


def body(i: int) -> bytes:
    """Request i: every fourth to the unpriced model; a third whole, two thirds streamed."""
    model = "house" if i % 4 == 3 else "mini"
    request: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "w " * (1 + i % 7)}]}
    if i % 3:
        request["stream"] = True
        if i % 3 == 1:
            request["stream_options"] = {"include_usage": True}
    return json.dumps(request).encode()


def chat_request(i: int, keys: list[str]) -> bytes:
    """Request ``i`` on the wire, with the API key of its turn."""
    data = body(i)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {keys[i % len(keys)]}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


class Client(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()
        if not self.lost.done():
            self.lost.set_result(None)

    def _fail(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection lost"))

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await asyncio.wait_for(self.done, 30)


class Run:
    def __init__(self, port: int, keys: list[str], total: int, kill_at: int, kill: Any) -> None:
        self.port, self.keys, self.total, self.kill_at, self.kill = port, keys, total, kill_at, kill
        self.next = 0
        self.completions: list[float] = []
        self.failures = 0
        self.statuses: dict[int, int] = {}
        self.killed_at = 0.0

    async def connection(self) -> None:
        loop = asyncio.get_running_loop()
        client: Client | None = None
        while self.next < self.total:
            i = self.next
            self.next += 1
            if i == self.kill_at and not self.killed_at:
                self.killed_at = time.monotonic()
                self.kill()
            try:
                if client is None or client.transport is None or client.transport.is_closing():
                    _, client = await loop.create_connection(Client, "127.0.0.1", self.port)
                status = await client.request(chat_request(i, self.keys))
                self.statuses[status] = self.statuses.get(status, 0) + 1
                self.completions.append(time.monotonic())
            except (TimeoutError, OSError, ConnectionError):
                self.failures += 1  # cut off by the kill (the provider may have answered it)
                client = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--kill-at", type=float, default=0.5, help="the fraction of requests sent at the kill"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fastgw-ledger-bench-"))
    secrets = work / "secrets"
    secrets.mkdir()
    (secrets / "admin.token").write_text(ADMIN_TOKEN + "\n")
    (secrets / "pepper").write_text(os.urandom(32).hex())
    fake = start_fake()
    fake.first_token_delay = 0.0
    gw = start_gateway(work, ledger_config(fake.port, free_port(), secrets), workers=args.workers)
    try:
        keys = [issue(gw, "acme")[0], issue(gw, "zeta")[0]]
        run = Run(
            gw.port,
            keys,
            args.requests,
            int(args.requests * args.kill_at),
            lambda: os.kill(gw.worker_pid(0), signal.SIGKILL),
        )
        started = time.monotonic()

        async def drive() -> None:
            await asyncio.gather(*(run.connection() for _ in range(args.concurrency)))

        asyncio.run(drive())
        elapsed = time.monotonic() - started
        code = gw.stop()
    finally:
        if gw.proc.poll() is None:
            gw.stop()
        fake.stop_thread()
    out = fastgw(
        "usage",
        "--config",
        str(gw.config),
        "--group-by",
        "model",
        "--format",
        "json",
        env={"STATE_DIRECTORY": str(gw.state)},
    )
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return 1
    ledger = {row["model"]: row for row in json.loads(out.stdout)}
    truth = served(fake)
    provider_total = sum(t["requests"] for t in truth.values())
    ledger_total = sum(r["requests"] for r in ledger.values())
    lost = provider_total - ledger_total
    window = FLUSH_SECONDS + 0.2
    bound = sum(1 for t in run.completions if run.killed_at - window <= t <= run.killed_at) + run.failures
    tokens_ok = all(
        ledger.get(alias, {}).get(kind, 0) <= truth.get(model, {}).get(kind, 0)
        for alias, model in (("mini", "gpt-4o-mini"), ("house", "house-model"))
        for kind in ("prompt_tokens", "completion_tokens")
    )
    report = {
        "requests_sent": args.requests,
        "workers": args.workers,
        "seconds": round(elapsed, 1),
        "gateway_exit": code,
        "statuses": run.statuses,
        "cut_off_by_kill": run.failures,
        "provider": {m: dict(t) for m, t in truth.items()},
        "provider_mini_cost_usd": round(mini_cost_usd(fake), 9),
        "ledger": ledger,
        "lost_requests": lost,
        "loss_bound_requests": bound,
        "flush_seconds": FLUSH_SECONDS,
        "within_bound": 0 <= lost <= bound and tokens_ok,
    }
    print(json.dumps(report, indent=2))
    return 0 if report["within_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
