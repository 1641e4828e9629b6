"""Where the response cache keeps answers: in each worker's memory (bounded in bytes, LRU, TTL), and
optionally in Redis, shared by every worker and node.

An entry (``CachedAnswer``) is the response exactly as the client was sent it: the head's fields and the
body as the pieces that were written one by one (one per write of a stream: its event boundaries), with
the usage and target of the original call. Its wire form (``encode``) is a JSON line of metadata followed
by length-prefixed pieces, so bytes round-trip exactly; a value that does not decode is a miss.

Redis is never allowed to fail a request: each command has a deadline (the route's ``redis_timeout``);
a store that does not answer (a connection error, a timeout) is set aside for a back-off (doubling from
``PROBE_FIRST`` to ``PROBE_MAX``, once per failed probe however many requests were waiting on it) during
which it is not asked at all (memory only), with one log line when it goes down and one when it is back.
A store that answers but refuses a command (out of memory under ``noeviction``, a read-only replica, a
foreign value of another type under a key) is not down: that command is a miss or a store not done,
logged at most once a minute. The worker counts both (``errors``).

A value read back is checked whole before it is used: its piece count and byte total, header bytes
without CR, LF or NUL, a finite creation time, token counts that are integers >= 0. Anything else (a
value cut short, another program's, an old layout) is a miss, never an error or a response split.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from fastgw.ai.adapter import Usage
from fastgw.log_line import log_line

Fields = tuple[tuple[bytes, bytes], ...]  # a response head as stored

# Bytes an entry costs beyond its pieces and fields: the OrderedDict slot, the key, the objects. An
# estimate that keeps many tiny entries from exceeding the bound unseen.
ENTRY_OVERHEAD: Final = 256
# And per piece (a stream keeps one per event): a bytes object's own header and its slot in the tuple.
PIECE_OVERHEAD: Final = 48
# A command refused by a store that answers is logged at most this often: a full Redis refuses every SET.
REFUSED_LOG_SECONDS: Final = 60.0
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
    ttl: float = 0.0  # the seconds Redis was told to keep it (0: unknown, an entry of an older version)

    @property
    def size(self) -> int:
        pieces = self.pieces
        return (
            ENTRY_OVERHEAD
            + PIECE_OVERHEAD * len(pieces)
            + sum(map(len, pieces))
            + sum(len(n) + len(v) for n, v in self.fields)
        )


def encode(entry: CachedAnswer, ttl: float = 0.0) -> bytes:
    """The Redis value; ``ttl``: the expiry it is stored with, kept so that a reader tells the entry's
    age from Redis's own countdown (PTTL), not from two machines' clocks."""
    u = entry.usage
    meta = {
        "fields": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in entry.fields],
        "usage": [u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens, u.reported],
        "provider": [entry.provider, entry.provider_model],
        "created": entry.created,
        "ttl": ttl,
        "pieces": [len(entry.pieces), sum(map(len, entry.pieces))],
    }
    return b"".join([orjson.dumps(meta), b"\n"] + [_LENGTH.pack(len(p)) + p for p in entry.pieces])


def decode(data: bytes) -> CachedAnswer | None:
    """The entry, or None for anything that is not one whole (see the module docstring)."""
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
        count, total = meta["pieces"]
        if count != len(pieces) or total != sum(map(len, pieces)) or not pieces:
            return None  # cut short at a piece boundary, or pieces added
        fields = tuple(_field(pair) for pair in meta["fields"])
        length_field = next((v for n, v in fields if n == b"content-length"), None)
        if length_field is not None and length_field != b"%d" % total:
            return None
        counts = meta["usage"][:4]
        if not all(type(n) is int and n >= 0 for n in counts):
            return None
        prompt, completion, cached, reasoning = counts
        provider, provider_model = meta["provider"]
        created = meta["created"]
        ttl = meta.get("ttl", 0.0)
        if not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl < 0:
            return None
        if (
            not isinstance(provider, str)
            or not isinstance(provider_model, str)
            or not isinstance(created, (int, float))
            or not math.isfinite(created)
        ):
            return None
        return CachedAnswer(
            fields,
            tuple(pieces),
            Usage(prompt, completion, cached, reasoning, meta["usage"][4] is True),
            provider,
            provider_model,
            float(created),
            float(ttl),
        )
    except Exception:  # whatever else is wrong with a value read from outside: a miss
        return None


def _field(pair: Any) -> tuple[bytes, bytes]:
    """One stored head field, refused (ValueError) unless two strings whose bytes cannot end a line."""
    name, value = pair
    both = (name.encode("latin-1"), value.encode("latin-1"))
    if any(c in part for part in both for c in b"\r\n\0") or not both[0]:
        raise ValueError("not a header field")
    return both


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
    """Entries shared through Redis (``SET key value PX ttl``). Never raises: a failure is a miss, or a
    store not done; a store that does not answer is set aside as the module docstring says."""

    __slots__ = (
        "_client",
        "_delay",
        "_module",
        "_refused_logged",
        "down",
        "down_until",
        "errors",
        "url",
        "where",
    )

    def __init__(self, url: str, module: Any = None) -> None:
        self.url = url
        self.where = _where(url)
        self.errors = 0  # failed commands since the worker started
        self.down = False  # the last command failed (logged once, until one works)
        self.down_until = 0.0  # monotonic time before which Redis is not asked
        self._delay = PROBE_FIRST
        self._refused_logged = -REFUSED_LOG_SECONDS  # monotonic: the last refused command logged
        self._client: Any = None
        # Imported here, at the config's compile, not by a worker's first request: the import takes
        # ~0.1 s, the default redis_timeout, and counted against it the store looked down at every start.
        self._module = module if module is not None else _redis_module()

    @property
    def up(self) -> bool:
        """Worth asking now: working, or its back-off is over (the next command is the probe)."""
        return time.monotonic() >= self.down_until

    async def get(self, key: str, timeout: float) -> tuple[bytes, float] | None:
        """The value and its remaining seconds to live, or None (absent, or Redis unavailable)."""
        if not self.up:
            return None
        asked = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                async with self._redis().pipeline(transaction=False) as pipe:
                    pipe.get(REDIS_PREFIX + key)
                    pipe.pttl(REDIS_PREFIX + key)
                    value, left = await pipe.execute()
        except Exception as exc:  # any failure of the store is a miss, never the request's
            self._failed(exc, asked)
            return None
        self._worked()
        if not isinstance(value, bytes) or not isinstance(left, int) or left <= 0:
            return None
        return value, left / 1000.0

    async def put(self, key: str, value: bytes, ttl: float, timeout: float) -> None:
        if not self.up:
            return
        asked = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await self._redis().set(REDIS_PREFIX + key, value, px=max(1, int(ttl * 1000)))
        except Exception as exc:  # as in get: the answer was sent, only sharing it failed
            self._failed(exc, asked)
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
            aioredis, retry, no_backoff, _refused = self._module
            # No socket timeouts of its own: each command runs under its route's redis_timeout.
            self._client = aioredis.Redis.from_url(self.url, retry=retry(no_backoff(), 0))
        return self._client

    def _failed(self, exc: BaseException, asked: float) -> None:
        self.errors += 1
        if isinstance(exc, self._module[3]):
            # Redis answered and refused the command (OOM, READONLY, WRONGTYPE): not down, this one
            # command failed. Logged once a minute: a full Redis refuses every SET.
            now = time.monotonic()
            if now - self._refused_logged >= REFUSED_LOG_SECONDS:
                self._refused_logged = now
                log_line(f"response cache store {self.where} refused a command ({type(exc).__name__}: {exc})")
            return
        if self.down and asked < self.down_until:
            return  # sent before the store was set aside: the back-off already counts this outage
        if not self.down:
            self.down = True
            log_line(f"response cache store {self.where} unavailable ({type(exc).__name__}): memory only")
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
            log_line(f"response cache store {self.where} is back")
        self._delay = PROBE_FIRST


async def _close(client: Any) -> None:
    try:
        await client.aclose()
    except Exception:  # closing a broken connection: nothing left to do
        pass


def _redis_module() -> tuple[Any, Any, Any, type[Exception]]:
    """redis-py's asyncio client, its Retry and NoBackoff, and the error of a command Redis refused:
    imported only where a route shares its cache."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ResponseError

    return aioredis, Retry, NoBackoff, ResponseError


_CLOSING: set[asyncio.Task[None]] = set()
# One RedisCache per URL in a worker: routes and reloads share its connection and its up/down state (each
# route's commands run under its own redis_timeout, so a reload changing it reuses the connection).
_SHARED: dict[str, RedisCache] = {}


def shared_redis(url: str) -> RedisCache:
    found = _SHARED.get(url)
    if found is None:
        found = _SHARED[url] = RedisCache(url)
    return found


def _where(url: str) -> str:
    """The store's address for log lines: scheme, host and port (a URL may carry a password)."""
    scheme, _, rest = url.partition("://")
    host = rest.rpartition("@")[2].split("/", 1)[0]
    return f"{scheme}://{host}"
