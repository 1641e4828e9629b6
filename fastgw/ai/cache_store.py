"""Where the response cache keeps answers: in each worker's memory (bounded in bytes, LRU, TTL), and
optionally in Redis, shared by every worker and node.

An entry (``CachedAnswer``) is the response exactly as the client was sent it: the head's fields and the
body as the pieces that were written one by one (one per write of a stream: its event boundaries), with
the usage and target of the original call. Its wire form (``encode``) is a JSON line of metadata followed
by length-prefixed pieces, so bytes round-trip exactly; a value that does not decode is a miss.

Redis is never allowed to fail a request: each command has a deadline (``timeout``); a failure marks the
store down for a back-off (doubling from ``PROBE_FIRST`` to ``PROBE_MAX``) during which it is not asked at
all (memory only), with one log line when it goes down and one when it is back, and the worker counts its
errors (``errors``).
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from fastgw.ai.adapter import Usage

Fields = tuple[tuple[bytes, bytes], ...]  # a response head as stored

# Bytes an entry costs beyond its pieces and fields: the OrderedDict slot, the key, the objects. An
# estimate that keeps many tiny entries from exceeding the bound unseen.
ENTRY_OVERHEAD: Final = 256
PROBE_FIRST: Final = 1.0  # seconds a failed Redis is left alone before the next try
PROBE_MAX: Final = 30.0  # the longest back-off: a store back up is used again within this
REDIS_PREFIX: Final = "fgw:llmcache:"
_LENGTH: Final = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    fields: Fields  # the response head as first sent (x-fastgw-cache excluded)
    pieces: tuple[bytes, ...]  # the body, one item per write (a stream's events as they were sent)
    usage: Usage  # the original call's tokens: what a hit saves
    provider: str
    provider_model: str
    created: float  # unix time it was stored (the hit's Age header)

    @property
    def size(self) -> int:
        return ENTRY_OVERHEAD + sum(map(len, self.pieces)) + sum(len(n) + len(v) for n, v in self.fields)


def encode(entry: CachedAnswer) -> bytes:
    u = entry.usage
    meta = {
        "fields": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.fields],
        "usage": [u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens, u.reported],
        "provider": [entry.provider, entry.provider_model],
        "created": entry.created,
    }
    return b"".join([orjson.dumps(meta), b"\n"] + [_LENGTH.pack(len(p)) + p for p in entry.pieces])


def decode(data: bytes) -> CachedAnswer | None:
    """The entry, or None for anything that is not one (an old layout, a corrupted value)."""
    try:
        line, _, rest = data.partition(b"\n")
        meta = orjson.loads(line)
        pieces = []
        at = 0
        while at < len(rest):
            (length,) = _LENGTH.unpack_from(rest, at)
            at += 4
            if at + length > len(rest):
                return None
            pieces.append(rest[at : at + length])
            at += length
        prompt, completion, cached, reasoning, reported = meta["usage"]
        return CachedAnswer(
            tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in meta["fields"]),
            tuple(pieces),
            Usage(int(prompt), int(completion), int(cached), int(reasoning), bool(reported)),
            str(meta["provider"][0]),
            str(meta["provider"][1]),
            float(meta["created"]),
        )
    except (ValueError, KeyError, TypeError, IndexError, struct.error):
        return None


class MemoryCache:
    """The worker's own entries: least recently used first out once ``max_bytes`` would be exceeded, and
    each gone ``ttl`` seconds after it was stored (``clock``: monotonic seconds, injected by tests)."""

    __slots__ = ("_entries", "clock", "max_bytes", "size", "ttl")

    def __init__(self, max_bytes: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.size = 0
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedAnswer | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, entry = found
        if self.clock() >= expires:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedAnswer, ttl: float | None = None) -> None:
        """Store ``entry`` (for ``ttl`` seconds if given: what Redis had left); one larger than the whole
        cache is not stored."""
        size = entry.size
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (self.clock() + (self.ttl if ttl is None else ttl), entry)
        self.size += size
        while self.size > self.max_bytes:
            self._remove(next(iter(self._entries)))

    def _remove(self, key: str) -> None:
        _, entry = self._entries.pop(key)
        self.size -= entry.size


class RedisCache:
    """Entries shared through Redis (``SET key value EX ttl``). Never raises: a failure is a miss, or a
    store not done, and sets the store aside for the back-off described in the module docstring."""

    __slots__ = ("_client", "_delay", "down", "down_until", "errors", "timeout", "url", "where")

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.where = _where(url)
        self.errors = 0  # failed commands since the worker started
        self.down = False  # the last command failed (logged once, until one works)
        self.down_until = 0.0  # monotonic time before which Redis is not asked
        self._delay = PROBE_FIRST
        self._client: Any = None

    @property
    def up(self) -> bool:
        """Worth asking now: working, or its back-off is over (the next command is the probe)."""
        return time.monotonic() >= self.down_until

    async def get(self, key: str) -> tuple[bytes, float] | None:
        """The value and its remaining seconds to live, or None (absent, or Redis unavailable)."""
        if not self.up:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                async with self._redis().pipeline(transaction=False) as pipe:
                    pipe.get(REDIS_PREFIX + key)
                    pipe.pttl(REDIS_PREFIX + key)
                    value, left = await pipe.execute()
        except Exception as exc:  # any failure of the store is a miss, never the request's
            self._failed(exc)
            return None
        self._worked()
        if value is None or left is None or left <= 0:
            return None
        return bytes(value), left / 1000.0

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if not self.up:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._redis().set(REDIS_PREFIX + key, value, px=max(1, int(ttl * 1000)))
        except Exception as exc:  # as in get: the answer was sent, only sharing it failed
            self._failed(exc)
            return
        self._worked()

    async def close(self) -> None:
        """Close the connection, and any a failure left closing (tests; a worker's exit ends them)."""
        client, self._client = self._client, None
        if client is not None:
            await _close(client)
        await asyncio.gather(*list(_CLOSING), return_exceptions=True)

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio as aioredis  # only for routes that share their cache
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
        return self._client

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.down:
            self.down = True
            _log(f"response cache store {self.where} unavailable ({type(exc).__name__}): memory only")
        self.down_until = time.monotonic() + self._delay
        self._delay = min(self._delay * 2.0, PROBE_MAX)
        client, self._client = self._client, None  # a fresh connection on the next try
        if client is not None:
            task = asyncio.get_running_loop().create_task(_close(client))
            _CLOSING.add(task)  # held until done: the loop keeps only weak references to Tasks
            task.add_done_callback(_CLOSING.discard)

    def _worked(self) -> None:
        if self.down:
            self.down = False
            _log(f"response cache store {self.where} is back")
        self._delay = PROBE_FIRST


async def _close(client: Any) -> None:
    try:
        await client.aclose()
    except Exception:  # closing a broken connection: nothing left to do
        pass


_CLOSING: set[asyncio.Task[None]] = set()
# One RedisCache per URL in a worker: routes and reloads share its connection and its up/down state.
_SHARED: dict[tuple[str, float], RedisCache] = {}


def shared_redis(url: str, timeout: float) -> RedisCache:
    found = _SHARED.get((url, timeout))
    if found is None:
        found = _SHARED[(url, timeout)] = RedisCache(url, timeout)
    return found


def _where(url: str) -> str:
    """The store's address for log lines: scheme, host and port (a URL may carry a password)."""
    scheme, _, rest = url.partition("://")
    host = rest.rpartition("@")[2].split("/", 1)[0]
    return f"{scheme}://{host}"


def _log(message: str) -> None:
    sys.stderr.write(f"fastgw: {message}\n")
    sys.stderr.flush()
