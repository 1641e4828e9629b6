"""Microseconds per request for each data-plane step: the hot-path budget in DESIGN.md, line by line.

    python bench/micro.py            # both parser backends
    python bench/micro.py --json F   # also write the numbers as JSON
    python bench/micro.py --only llm # one group: httptools, h11, sse, llm or guardrails

Each step runs the real code on a typical small GET (6 request headers, 4 response headers) in a tight
loop; numbers are the best of 5 repeats, in microseconds. The bar in issue 2: parse + route + header steps
+ serialise <= 6 us with httptools. The ``sse`` group: codec/sse.py parsing and encoding one streamed
OpenAI chunk event (issue 21's bar: per-event translation <= 5 us). The ``llm`` group: the AI gateway's
per-event stream translation, each way (issue 22's bar: <= 5 us per event each way). The ``guardrails``
group: an llm route's guardrails on a 2 KiB prompt (bench/guardrails_micro.py; issue 23's bar: mask +
restore <= 50 us).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.guardrails_micro import guardrails_steps
from fastgw.access_line import format_batch
from fastgw.ai.adapter import Json
from fastgw.ai.formats.anthropic_format import AnthropicStreamEncoder
from fastgw.ai.formats.openai_format import OpenAIStreamEncoder
from fastgw.ai.providers.anthropic_stream import AnthropicStreamTranslator
from fastgw.ai.providers.gemini_response import GeminiStreamTranslator
from fastgw.ai.providers.openai import OpenAIStream
from fastgw.codec.http1 import DetachedSink, ParserLimits
from fastgw.codec.http1_backends import make_reader
from fastgw.codec.path import normalize_path
from fastgw.codec.sse import SseParser, encode_event
from fastgw.config.compiler import compile_config
from fastgw.counters.table import CELL_INTS, CounterTable
from fastgw.exchange import Exchange
from fastgw.key_format import key_digest, new_key
from fastgw.metrics.worker import WorkerMetrics
from fastgw.policy.api_key import ApiKeyAuth
from fastgw.policy.identity import IdentityCache, KeyIdentity
from fastgw.policy.jwt_auth import JwtAuth, JwtIssuer
from fastgw.policy.network import NetworkRules, parse_networks
from fastgw.policy.rate_limit import LimitSpec, RateLimit
from fastgw.proxy_headers.request_head import ClientPeer, build_request_head
from fastgw.proxy_headers.request_ids import IdSource
from fastgw.proxy_headers.response_head import build_response_head

REQUEST = (
    b"GET /api/v1/items?id=42 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: wrk/4.2\r\n"
    b"Accept: application/json\r\nAccept-Encoding: gzip\r\nX-Request-Id: abc-123\r\n"
    b"Authorization: Bearer t0k3n\r\n\r\n"
)
# An upstream response head as UpstreamConnection hands it over: status line to the last field's CRLF.
RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 22 Nov 2026 18:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 100\r\nConnection: keep-alive\r\n"
)
CONFIG = b"""
[[listeners]]
bind = "127.0.0.1:8080"
[upstreams.api]
targets = ["127.0.0.1:9000"]
[[routes]]
name = "items"
path = "/api/v1"
upstream = "api"
auth = "none"
[[routes]]
name = "other"
path = "/other"
upstream = "api"
auth = "none"
"""


class NullSink(DetachedSink):
    """Keeps the last request head; everything else goes nowhere."""

    def __init__(self) -> None:
        self.ex: Exchange | None = None

    def on_request_head(self, ex: Exchange) -> None:
        self.ex = ex


def best(fn: Callable[[], object], number: int = 4000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=25)) / number * 1e6


def api_key_check(ex: Exchange) -> float:
    """The api_key policy on a request carrying a valid key, after its first use (the steady state)."""
    pepper = b"p" * 32
    key = new_key().encode()
    cache = IdentityCache()
    cache.put(
        key_digest(pepper, key),
        KeyIdentity("k_1", "c_1", "acme", "", frozenset(), frozenset(), None, 0.0),
    )
    policy = ApiKeyAuth("api_key", frozenset({b"authorization", b"x-api-key"}), (pepper,), cache, False)
    saved = ex.headers
    ex.headers = [(n, v) for n, v in saved if n != b"authorization"] + [(b"x-api-key", key)]
    assert policy.check(ex) is None  # first use: checksum + HMAC, then memoised
    try:
        return best(lambda: policy.check(ex))
    finally:
        ex.headers = saved


def limit_check(ex: Exchange, count: int, gcra: bool = False) -> float:
    """RateLimit.check + on_response on a table of 2 shards, limits that never trigger (with ``gcra``, the
    first limit is a GCRA one, as in bench/run.py's full chain)."""
    import mmap

    table = CounterTable()
    capacity = 4096
    table.attach(mmap.mmap(-1, 2 * capacity * CELL_INTS * 8), 0, 2, capacity)
    limits = tuple(
        LimitSpec(
            f"l{i}", f"bench:l{i}".encode(), 10**9, 1.0, "ip", b"", False, gcra=gcra and i == 0, burst=100
        )
        for i in range(count)
    )
    policy = RateLimit("rate_limit", limits, table)
    headers: list[tuple[bytes, bytes]] = []

    def one() -> None:
        policy.check(ex)
        headers.clear()
        policy.on_response(ex, headers)

    return best(one)


def jwt_checks(ex: Exchange) -> tuple[float, float]:
    """The jwt policy on an RS256 token: a cache hit (steady state) and a cold verification."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer = JwtIssuer(
        name="idp",
        issuer="https://idp/",
        audiences=("api",),
        algorithms=frozenset({"RS256"}),
        secret=None,
        keys_by_kid={},
        keys_without_kid=(key.public_key(),),
        leeway=30.0,
        consumer_claim="sub",
        scopes_claim="",
        roles_claim="roles",
        team_claim="",
    )
    policy = JwtAuth("jwt", {"https://idp/": issuer}, 8192, 10000, 30.0, False)
    claims = {"iss": "https://idp/", "aud": "api", "sub": "alice", "exp": int(time.time()) + 3600}
    token = jwt.encode(claims, key, algorithm="RS256").encode()
    saved = ex.headers
    ex.headers = [(n, v) for n, v in saved if n != b"authorization"] + [
        (b"authorization", b"Bearer " + token)
    ]
    try:
        assert policy.check(ex) is None
        cached = best(lambda: policy.check(ex))
        cold = min(timeit.repeat(lambda: policy._verify(token.decode()), number=50, repeat=5)) / 50 * 1e6
    finally:
        ex.headers = saved
    return cached, cold


# One streamed chat completion chunk as OpenAI sends it: one data line, one empty line.
SSE_EVENT = (
    b'data: {"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1733400000,'
    b'"model":"gpt-4o-mini","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,'
    b'"delta":{"content":" Hello"},"logprobs":null,"finish_reason":null}]}\n\n'
)


def sse_steps() -> dict[str, float]:
    """codec/sse.py per event of an LLM stream (issue 21: per-event translation <= 5 us in all)."""
    parser = SseParser()
    [event] = parser.feed(SSE_EVENT)
    return {
        "SSE parse (one OpenAI chunk event per feed)": best(lambda: parser.feed(SSE_EVENT), 20000),
        "SSE encode (the same event)": best(lambda: encode_event(event.data), 20000),
    }


# One Anthropic text delta event as the Messages API streams it, and the two events it needs before it.
ANTHROPIC_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_01","type":"message",'
    b'"role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,'
    b'"usage":{"input_tokens":25,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
ANTHROPIC_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":" Hello"}}\n\n'
)


# One Gemini streamGenerateContent?alt=sse event mid-answer (each carries the usage so far).
GEMINI_EVENT = (
    b'data: {"candidates":[{"content":{"parts":[{"text":" Hello"}],"role":"model"},"index":0}],'
    b'"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":2,"totalTokenCount":10},'
    b'"modelVersion":"gemini-2.0-flash","responseId":"mAitaKe4Lb7v"}\r\n\r\n'
)


def through(
    feed: Callable[[bytes], list[Json]], encode: Callable[[Json], bytes], event: bytes
) -> Callable[[], None]:
    """One provider event translated all the way: parsed into pivot chunks, each encoded for the client."""

    def step() -> None:
        for chunk in feed(event):
            encode(chunk)

    return step


def llm_steps() -> dict[str, float]:
    """fastgw/ai per streamed event: the provider's event in, the client's event out (issue 22's bar:
    per-event translation each way <= 5 us). Each translator is fed mid-stream events, as in a long
    answer: the stream's opening events are fed once before timing. The "->" rows with three names are
    the whole way, as the handler does it (``_relay_stream``: feed, then encode each chunk)."""
    openai_in = OpenAIStream()
    openai_out = OpenAIStreamEncoder(include_usage=True)
    [chunk] = openai_in.feed(SSE_EVENT)
    anthropic_in = AnthropicStreamTranslator()
    anthropic_in.feed(ANTHROPIC_START)
    anthropic_out = AnthropicStreamEncoder("claude-sonnet-4-5")
    anthropic_out.encode(chunk)  # the opening events (message_start, content_block_start) go out once
    assert anthropic_in.feed(ANTHROPIC_DELTA), "the Anthropic delta translates to a pivot chunk"
    gemini_in = GeminiStreamTranslator()
    assert gemini_in.feed(GEMINI_EVENT), "the Gemini event translates to a pivot chunk"  # the role goes once
    return {
        "OpenAI event -> pivot chunk": best(lambda: openai_in.feed(SSE_EVENT), 20000),
        "pivot chunk -> OpenAI SSE event": best(lambda: openai_out.encode(chunk), 20000),
        "OpenAI event -> pivot -> OpenAI SSE (each way)": best(
            through(openai_in.feed, openai_out.encode, SSE_EVENT), 20000
        ),
        "Anthropic provider event -> pivot chunk": best(lambda: anthropic_in.feed(ANTHROPIC_DELTA), 20000),
        "pivot chunk -> Anthropic SSE event": best(lambda: anthropic_out.encode(chunk), 20000),
        "OpenAI event -> pivot -> Anthropic SSE": best(
            through(openai_in.feed, anthropic_out.encode, SSE_EVENT), 20000
        ),
        "Anthropic event -> pivot -> OpenAI SSE": best(
            through(anthropic_in.feed, openai_out.encode, ANTHROPIC_DELTA), 20000
        ),
        "Gemini event -> pivot chunk": best(lambda: gemini_in.feed(GEMINI_EVENT), 20000),
        "Gemini event -> pivot -> OpenAI SSE": best(
            through(gemini_in.feed, openai_out.encode, GEMINI_EVENT), 20000
        ),
    }


def budget_steps() -> dict[str, float]:
    """ai/budgets.py per LLM request (issue 23's bar: <= 1 us each): one token limit, then one spend
    budget, each reserved before the call and settled with the usage after, on a table of 2 shards."""
    import mmap
    from types import SimpleNamespace

    from fastgw.ai.adapter import Usage
    from fastgw.ai.budgets import Budget, Budgets, Limit
    from fastgw.ai.price_config import compile_prices
    from fastgw.ai.record import LlmRecord

    table = CounterTable()
    table.attach(mmap.mmap(-1, 2 * 4096 * CELL_INTS * 8), 0, 2, 4096)
    caller = Exchange(b"POST", b"/v1/chat/completions", b"HTTP/1.1", [])
    caller.consumer = KeyIdentity("k_1", "c_1", "acme", "red", frozenset(), frozenset(), None, 0.0)
    pivot = {"model": "gpt-4o-mini", "max_tokens": 256}
    record = LlmRecord("gpt-4o-mini", "chat", usage=Usage(120, 80, reported=True))
    record.cost_usd = 0.0001
    target = SimpleNamespace(
        provider=SimpleNamespace(name="openai"), target=SimpleNamespace(model="gpt-4o-mini")
    )
    model = SimpleNamespace(targets=(target,))  # what the handler passes: the model's first target is priced

    def row(limit: Limit) -> float:
        budgets = Budgets((Budget("b", "bench:b", "consumer", (limit,)),), table, 1024)
        budgets.prices = compile_prices((), {"openai": "openai"}, lambda key, reason: ValueError(reason))  # type: ignore[arg-type, return-value]

        hold = budgets.reserve(caller, model, 600, pivot)
        assert hold.first is not None, "the limit counted the request (a spend budget: its price is known)"

        def one() -> None:
            hold = budgets.reserve(caller, model, 600, pivot)
            hold.settle(record, True)

        return best(one, 20000)

    return {
        "token-limit check (tokens_per_minute: reserve + settle)": row(
            Limit("tokens_per_minute", "tokens", "minute", 10**15)
        ),
        "budget check (usd_per_day: reserve + settle)": row(Limit("usd_per_day", "usd", "day", 10**15)),
    }


def measure(backend: str) -> dict[str, float]:
    snapshot = compile_config(CONFIG, "micro.toml")
    route = snapshot.routes[0]
    sink = NullSink()
    reader = make_reader(backend, sink, ParserLimits())
    ids = IdSource()
    results: dict[str, float] = {}
    results["parse (codec + framing scan)"] = best(
        lambda: reader.feed(REQUEST), 5000 if backend == "h11" else 20000
    )
    ex = sink.ex
    assert ex is not None
    ex.client_ip = "127.0.0.1"

    def route_step() -> None:
        target = ex.target
        q = target.find(b"?")
        ex.query = target[q + 1 :]
        ex.path, _found = snapshot.router.resolve(ex.host, target[:q], ex.method)

    results["route (split query, normalise, lookup: memo hit)"] = best(route_step)

    def route_miss() -> None:
        target = ex.target
        q = target.find(b"?")
        ex.query = target[q + 1 :]
        ex.path = normalize_path(target[:q])
        snapshot.router.lookup(ex.host, ex.path, ex.method)

    results["  (a memo miss: normalise + lookup)"] = best(route_miss)

    peer = ClientPeer(b"127.0.0.1", False, b"http")

    def request_head() -> None:
        ex.request_id = ids.request_id(ex.xrid)
        b"".join(
            build_request_head(
                ex,
                route,
                ex.path + b"?" + ex.query,
                b"127.0.0.1:9000",
                peer,
                b"1.1 fastgw",
                ids.traceparent(ex.traceparent),
            )
        )

    results["request headers (ids, XFF, Via, hop-by-hop)"] = best(request_head)

    def response_head() -> None:
        build_response_head(ex, route, 200, RESPONSE_HEAD, RESPONSE_HEAD.split(b"\r\n"), b"1.1 fastgw", False)

    results["response head (filter + serialise)"] = best(response_head)
    rules = NetworkRules("network", parse_networks(["10.0.0.0/8"]), parse_networks(["192.0.2.0/24"]), False)
    results["network policy check (cached verdict)"] = best(lambda: rules.check(ex))
    results["API key check (memoised key, X-API-Key)"] = api_key_check(ex)
    results["rate limit check (1 sliding window, 2 workers' shards)"] = limit_check(ex, 1)
    results["rate limit check (2 limits, response headers included)"] = limit_check(ex, 2)
    results["rate limit check (GCRA + sliding window)"] = limit_check(ex, 2, gcra=True)
    cached, cold = jwt_checks(ex)
    results["JWT check (RS256, verified-token cache hit)"] = cached
    results["JWT check (RS256, cold verification)"] = cold
    pending: list[Exchange] = []
    _time = time.time
    _mono = time.monotonic
    ex.route = route
    ex.status = 200
    ex.upstream_addr = b"127.0.0.1:9000"
    ex.upstream_ms = 1.0
    ex.bytes_out = 280
    ex.start = _mono()

    def log_record() -> None:  # what dispatch.complete does for the log: the Exchange is the record
        ex.ended = _time()
        ex.total_s = _mono() - ex.start
        pending.append(ex)

    results["log record hand-off (stamp + append)"] = best(log_record)
    batch = pending[:1000]
    results["log formatting (per record, in the tick)"] = (
        min(timeit.repeat(lambda: format_batch(batch, False), number=20, repeat=5)) / 20 / len(batch) * 1e6
    )
    metrics = WorkerMetrics()
    results["metrics (per record, in the tick)"] = (
        min(timeit.repeat(lambda: metrics.observe(batch), number=20, repeat=5)) / 20 / len(batch) * 1e6
    )
    budget = ("parse", "route", "request headers", "response head")
    results["= parse + route + headers + serialise"] = sum(
        us for step, us in results.items() if step.startswith(budget)
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", help="write results to this file")
    groups: dict[str, Callable[[], dict[str, float]]] = {
        "httptools": lambda: measure("httptools"),
        "h11": lambda: measure("h11"),
        "sse": sse_steps,
        "llm (per streamed event)": llm_steps,
        "budgets (per LLM request)": budget_steps,
        "guardrails (per request)": guardrails_steps,
    }
    parser.add_argument("--only", choices=[g.split()[0] for g in groups], help="run one group")
    args = parser.parse_args()
    everything = {}
    for group, run in groups.items():
        name = group.split()[0]
        if args.only not in (None, name):
            continue
        results = everything[name] = run()
        print(f"\n{group}")
        for step, us in results.items():
            print(f"  {step:48} {us:7.2f} us")
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
