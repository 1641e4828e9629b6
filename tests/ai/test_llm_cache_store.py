"""The response cache's stores (fastgw/ai/cache_store.py): the worker's memory holds at most max_bytes
(least recently used out first) and forgets entries at their TTL; the wire form round-trips every byte
and boundary; Redis is shared and, when it is down, a miss, never an error."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.ai.adapter import Usage
from fastgw.ai.cache import CacheSettings, ResponseCache
from fastgw.ai.cache_store import (
    ENTRY_OVERHEAD,
    PROBE_FIRST,
    CachedAnswer,
    MemoryCache,
    RedisCache,
    decode,
    encode,
)
from fastgw.config.fields import MiB
from tests.support.clock import FakeClock
from tests.support.redis_server import RedisServer

FIELDS = ((b"content-type", b"text/event-stream"), (b"x-fastgw-llm-target", b"oa/gpt-4o; attempts=1"))


def answer(*pieces: bytes, usage: Usage | None = None) -> CachedAnswer:
    return CachedAnswer(FIELDS, pieces, usage or Usage(3, 4, reported=True), "oa", "gpt-4o", 1.7e9)


def test_memory_holds_at_most_max_bytes_least_recently_used_out_first() -> None:
    size = answer(b"x" * 100).size
    memory = MemoryCache(3 * size, ttl=60.0, clock=FakeClock(0.0))
    for key in "abc":
        memory.put(key, answer(b"x" * 100))
    assert memory.size == 3 * size and len(memory) == 3
    assert memory.get("a") is not None  # "a" is now the most recently used
    memory.put("d", answer(b"x" * 100))
    assert memory.get("b") is None  # the least recently used went
    assert all(memory.get(k) is not None for k in "acd")
    memory.put("e", answer(b"x" * 250))  # worth two and a half: two more go
    assert memory.size <= memory.max_bytes
    assert memory.get("e") is not None and len(memory) == 2


def test_an_entry_larger_than_the_whole_memory_is_not_kept() -> None:
    memory = MemoryCache(ENTRY_OVERHEAD + 100, ttl=60.0)
    memory.put("big", answer(b"x" * 1000))
    assert memory.get("big") is None and memory.size == 0


def test_replacing_a_key_counts_its_bytes_once() -> None:
    memory = MemoryCache(10_000, ttl=60.0)
    memory.put("k", answer(b"x" * 100))
    memory.put("k", answer(b"y" * 50))
    assert memory.size == answer(b"y" * 50).size
    entry = memory.get("k")
    assert entry is not None and entry.pieces == (b"y" * 50,)


def test_entries_expire_at_their_ttl() -> None:
    clock = FakeClock(100.0)
    memory = MemoryCache(10_000, ttl=10.0, clock=clock)
    memory.put("k", answer(b"a"))
    memory.put("short", answer(b"b"), ttl=2.0)  # what Redis had left of it
    clock.advance(1.9)
    assert memory.get("short") is not None
    clock.advance(0.1)
    assert memory.get("short") is None
    clock.advance(7.9)
    assert memory.get("k") is not None
    clock.advance(0.1)
    assert memory.get("k") is None
    assert memory.size == 0 and len(memory) == 0


@given(
    st.lists(st.binary(max_size=64), min_size=1, max_size=8),
    st.tuples(*(st.integers(min_value=0, max_value=2**31) for _ in range(4))),
    st.text(max_size=10),
)
def test_the_wire_form_keeps_every_byte_and_boundary(
    pieces: list[bytes], counts: tuple[int, int, int, int], provider: str
) -> None:
    entry = CachedAnswer(FIELDS, tuple(pieces), Usage(*counts, reported=True), provider, "m", 12.5)
    assert decode(encode(entry)) == entry


@given(st.binary(max_size=200))
def test_anything_else_decodes_as_a_miss_never_an_error(data: bytes) -> None:
    decoded = decode(data)
    assert decoded is None or isinstance(decoded, CachedAnswer)


def test_a_truncated_value_is_a_miss() -> None:
    data = encode(answer(b"data: one\n\n", b"data: two\n\n"))
    assert decode(data[:-3]) is None


@pytest.mark.asyncio
async def test_redis_shares_entries_and_its_outage_is_a_miss(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    try:
        one, two = RedisCache(server.url), RedisCache(server.url)
        value = encode(answer(b"data: hi\n\n"))
        await one.put("k", value, ttl=30.0, timeout=0.5)
        found = await two.get("k", 0.5)
        assert found is not None
        assert found[0] == value and 0 < found[1] <= 30.0
        assert await two.get("absent", 0.5) is None
        server.stop()
        assert await two.get("k", 0.5) is None  # down: a miss
        assert two.errors == 1 and two.down and not two.up  # set aside: not asked during the back-off
        assert await two.get("k", 0.5) is None
        await two.put("k", value, ttl=30.0, timeout=0.5)
        assert two.errors == 1
        await one.close()
        await two.close()
    finally:
        server.stop()


@given(
    st.lists(
        st.tuples(st.sampled_from(["put", "get", "tick"]), st.sampled_from("abcdefgh"), st.integers(0, 3000)),
        max_size=60,
    )
)
def test_the_byte_bound_and_the_accounting_hold_whatever_happens(ops: list[tuple[str, str, int]]) -> None:
    clock = FakeClock(0.0)
    memory = MemoryCache(8000, ttl=5.0, clock=clock)
    latest: dict[str, int] = {}  # key -> the length last put under it
    for op, key, n in ops:
        if op == "put":
            memory.put(key, answer(b"x" * n))
            latest[key] = n
        elif op == "get":
            found = memory.get(key)
            assert found is None or found.pieces == (b"x" * latest[key],)  # never another key's, never stale
        else:
            clock.advance(n / 1000.0)
        assert memory.size <= memory.max_bytes
        assert memory.size == sum(e.size for _, e in memory._entries.values())


def _tampered(entry: CachedAnswer, **meta: object) -> bytes:
    """``entry``'s wire form with metadata fields replaced (another program's value, or a bug's)."""
    line, _, rest = encode(entry).partition(b"\n")
    return orjson.dumps({**orjson.loads(line), **meta}) + b"\n" + rest


@pytest.mark.parametrize(
    "change",
    [
        {"fields": [["set-cookie", "a\r\nx-evil: 1"]]},  # would split the response
        {"fields": [["x", 1]]},
        {"fields": [["content-length", "999"]]},  # would leave the client waiting for bytes never sent
        {"created": "inf"},
        {"created": float("nan")},
        {"created": "1.7e9"},
        {"usage": [-1005, 4, 0, 0, True]},
        {"usage": [3.5, 4, 0, 0, True]},
        {"pieces": [1, 11]},  # a piece was added
        {"pieces": [2, 10]},
        {"provider": [1, "m"]},
    ],
)
def test_a_value_that_is_not_an_entry_whole_is_a_miss(change: dict[str, object]) -> None:
    entry = answer(b"data: one\n\n", b"data: two\n\n")
    assert decode(_tampered(entry)) == entry
    assert decode(_tampered(entry, **change)) is None


def test_a_stream_cut_at_a_piece_boundary_is_a_miss() -> None:
    data = encode(answer(b"data: one\n\n", b"data: two\n\n"))
    assert decode(data[: -(4 + len(b"data: two\n\n"))]) is None  # no [DONE]: never replayed as whole


@pytest.mark.asyncio
async def test_a_command_redis_refuses_is_not_an_outage(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Redis answers, but refuses: a foreign value of another type under a key (WRONGTYPE), or a full
    Redis under noeviction (OOM on every SET). That command is a miss; the store is not set aside (its
    other keys keep working) and the refusals are logged once, not as an outage and its end each time."""
    import redis.asyncio as aioredis

    server = RedisServer(tmp_path)
    cache = RedisCache(server.url)
    raw = aioredis.Redis.from_url(server.url)
    try:
        value = encode(answer(b"data: hi\n\n"))
        await cache.put("good", value, ttl=30.0, timeout=0.5)
        await raw.lpush("fgw:llmcache:foreign", "x")
        for _ in range(3):
            assert await cache.get("foreign", 0.5) is None
            found = await cache.get("good", 0.5)
            assert found is not None and found[0] == value
        assert cache.errors == 3 and not cache.down
        await raw.config_set("maxmemory", "1")  # below what is used: every write is refused
        await cache.put("more", value, ttl=30.0, timeout=0.5)
        assert cache.errors == 4 and not cache.down and cache.up
        assert await cache.get("good", 0.5) is not None  # reads still served
        err = capfd.readouterr().err
        assert err.count("refused a command") == 1, err
        assert "unavailable" not in err and "is back" not in err, err
    finally:
        await raw.aclose()
        await cache.close()
        server.stop()


@pytest.mark.asyncio
async def test_requests_failing_together_set_the_store_aside_once(tmp_path: Path) -> None:
    """Six requests waiting on a Redis that went away: one outage, one back-off of PROBE_FIRST, not six
    doublings of it (which set a 0.3 s blip aside for 30 s)."""
    server = RedisServer(tmp_path)
    cache = RedisCache(server.url)
    try:
        await cache.put("k", encode(answer(b"data: hi\n\n")), ttl=30.0, timeout=0.5)
        server.stop()
        failed_at = time.monotonic()
        assert await asyncio.gather(*(cache.get("k", 0.5) for _ in range(6))) == [None] * 6
        assert cache.errors == 6 and cache.down
        assert cache.down_until - failed_at <= PROBE_FIRST + 0.5
    finally:
        await cache.close()
        server.stop()


@pytest.mark.asyncio
async def test_a_large_answer_is_not_taken_for_an_outage(tmp_path: Path) -> None:
    """Each command ran under redis_timeout alone: a 16 MiB answer takes Redis longer than that to
    take in, and the timeout set Redis aside for every route of the worker (memory only, a log line)."""
    server = RedisServer(tmp_path)
    settings = CacheSettings(60.0, 64 * MiB, 32 * MiB, "route", server.url, 0.002)
    writer, reader = ResponseCache(settings, "r"), ResponseCache(settings, "r")  # a memory each
    try:
        big = CachedAnswer(FIELDS, (b"x" * (16 * MiB),), Usage(3, 4, reported=True), "oa", "m", time.time())
        await writer.put("k", big)
        assert writer.redis is not None and not writer.redis.down and writer.redis.errors == 0
        found = await reader._get("k")  # not in its memory: read from Redis, as large
        assert found is not None and found.pieces == big.pieces
    finally:
        if writer.redis is not None:
            await writer.redis.close()
        server.stop()


@pytest.mark.asyncio
async def test_an_entry_is_aged_by_redis_not_by_two_nodes_clocks(tmp_path: Path) -> None:
    """A reader compared its clock with the writer's: behind by the ttl, the writer's entries were
    always too old for the other nodes (never a hit there), and Age was off by the skew."""
    server = RedisServer(tmp_path)
    settings = CacheSettings(60.0, MiB, MiB, "route", server.url, 0.5)
    writer, reader = ResponseCache(settings, "r"), ResponseCache(settings, "r")
    try:
        behind = time.time() - 3600  # the writer's clock an hour behind the reader's
        await writer.put("k", CachedAnswer(FIELDS, (b"x",), Usage(3, 4, reported=True), "oa", "m", behind))
        found = await reader._get("k")
        assert found is not None and found.ttl == 60.0
        assert 0 <= time.time() - found.created < 5  # its age by Redis's countdown: seconds, not an hour
    finally:
        if writer.redis is not None:
            await writer.redis.close()
        server.stop()
