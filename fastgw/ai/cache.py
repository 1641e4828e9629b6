"""The response cache of an llm route (opt-in: ``handler = { cache = { ... } }``): deterministic chat
requests answered again from the first answer, without a provider call.

Which requests, and under which key: ``cache_key.py``. Where entries live: ``cache_store.py`` (each
worker's memory, and Redis when ``redis_url`` is set: memory first, then Redis, whose hits fill memory).

What is stored is the response exactly as the client was sent it, in its own format: the head and the
body as the writes that made it (``RecordingWriter``), so a streamed hit replays the same events with the
same boundaries, one write each, and the client's SDK sees the original chunks. Streamed and whole
answers are separate entries (``stream`` is part of the key): a whole answer cannot be rebuilt byte for
byte from a stream's chunks, so a hit is always the exact bytes of an earlier answer of the same kind.

Only complete successful answers are kept: a 200 that ended normally, with no provider error recorded
(a stream that ended with an error event is not), within ``max_entry_bytes``. A client that hangs up
cancels the handler before anything is kept. The client may opt out per request with
``Cache-Control``: ``no-store`` neither reads nor writes the cache; ``no-cache`` skips the lookup (a fresh
answer) and stores that answer. A request with the client's own provider key
(``x-fastgw-provider-key``) is never cached: it is billed to the client's account, not the gateway's.

Every response of a caching route says what happened in ``x-fastgw-cache``: ``hit``, ``miss`` (stored
for next time if it completes), or ``bypass`` (not cacheable: not deterministic, or opted out). A hit
also carries ``Age`` and is recorded with zero tokens (cost 0) and the tokens it saved
(``LlmRecord.cache_hit``, ``tokens_saved``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Final, Literal

from fastgw.ai.adapter import Json, Usage
from fastgw.ai.cache_key import cache_key, deterministic, scope_id
from fastgw.ai.cache_store import (
    CachedAnswer,
    MemoryCache,
    RedisCache,
    decode,
    encode,
    shared_redis,
)
from fastgw.ai.record import LlmRecord
from fastgw.config.context import CompileContext
from fastgw.config.fields import MiB, SecretSpec, doc
from fastgw.exchange import Exchange
from fastgw.handler_api import Fields, ResponseWriter
from fastgw.handlers.kind import CompileError
from fastgw.secret_refs import resolve_secret

HEADER: Final = b"x-fastgw-cache"
TTL_MAX: Final = (7 * 86400, "a week: an answer older than that is stale for any deterministic use")
MEMORY_MAX: Final = (16 * 1024 * MiB, "held in memory by every worker")
ENTRY_MAX: Final = (64 * MiB, "an entry is held whole in memory and sent to Redis in one command")
REDIS_TIMEOUT_MAX: Final = (5, "a request waits for the store: a slower cache slows what it should speed up")
# The slowest a healthy Redis moves an entry's bytes (a busy LAN): a command's deadline is redis_timeout
# plus the entry's bytes at this rate, so sending a large answer (64 MiB at most) is not taken for an
# outage that sets Redis aside for every route of the worker. A lookup is allowed the largest entry.
REDIS_BYTES_PER_SECOND: Final = 10 * MiB


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheSpec:
    ttl: float = doc("seconds an answer is served from the cache after it was stored", 300.0, most=TTL_MAX)
    max_bytes: int = doc(
        "bytes of answers each worker holds in memory; the least recently used go first",
        64 * MiB,
        most=MEMORY_MAX,
    )
    max_entry_bytes: int = doc(
        "the largest answer stored (larger ones are relayed, not cached)", 1 * MiB, most=ENTRY_MAX
    )
    scope: Literal["consumer", "team", "route"] = doc(
        "who shares answers: 'consumer' (each its own), 'team' (a consumer's team; a consumer without one"
        " keeps its own), 'route' (everyone on the route). Never across teams unless 'route'",
        "consumer",
    )
    redis_url: str = doc(
        "share the cache through Redis (redis://, rediss:// or unix:// URL; a password in it: use"
        " redis_url_secret); empty: each worker's memory only",
        "",
    )
    redis_url_secret: SecretSpec | None = doc("the Redis URL as a secret reference", None)
    redis_timeout: float = doc(
        "seconds a Redis command may take before the store counts as down (memory only meanwhile), plus"
        " 0.1 s per MiB of the entry sent (a lookup: of max_entry_bytes)",
        0.1,
        most=REDIS_TIMEOUT_MAX,
    )


@dataclass(frozen=True, slots=True)
class CacheSettings:
    ttl: float
    max_bytes: int
    max_entry_bytes: int
    scope: str
    redis_url: str = ""  # "" for none; may carry a password: never printed
    redis_timeout: float = 0.1


def compile_cache(spec: CacheSpec, ctx: CompileContext) -> CacheSettings:
    """The route's cache settings, or CompileError naming the field (``cache.<field>``)."""
    if spec.ttl <= 0:
        raise CompileError("cache.ttl", f"must be greater than 0 seconds, got {spec.ttl}")
    if spec.max_entry_bytes < 1:
        raise CompileError("cache.max_entry_bytes", f"must be at least 1, got {spec.max_entry_bytes}")
    if spec.max_bytes < spec.max_entry_bytes:
        raise CompileError(
            "cache.max_bytes",
            f"{spec.max_bytes} is smaller than max_entry_bytes ({spec.max_entry_bytes}): nothing would fit",
        )
    if spec.redis_timeout <= 0:
        raise CompileError("cache.redis_timeout", f"must be greater than 0 seconds, got {spec.redis_timeout}")
    url = spec.redis_url
    if spec.redis_url_secret is not None:
        if url:
            raise CompileError("cache.redis_url", "give redis_url or redis_url_secret, not both")
        ref = ctx.secret(f"{ctx.route_key}.handler.cache.redis_url_secret", spec.redis_url_secret)
        url = resolve_secret(ref).decode().strip()
    elif "@" in url.split("//", 1)[-1].split("/", 1)[0]:
        raise CompileError("cache.redis_url", "carries a password: give it as redis_url_secret")
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise CompileError("cache.redis_url", "must be a redis://, rediss:// or unix:// URL")
    return CacheSettings(spec.ttl, spec.max_bytes, spec.max_entry_bytes, spec.scope, url, spec.redis_timeout)


class RecordingWriter:
    """The client's ResponseWriter with ``x-fastgw-cache`` added to the head, keeping a copy of what the
    handler sends (each write one piece) while ``keeping`` and within ``limit`` bytes."""

    __slots__ = ("ended", "fields", "inner", "keeping", "limit", "pieces", "size", "status", "verdict")

    def __init__(self, inner: ResponseWriter, verdict: bytes, keeping: bool, limit: int) -> None:
        self.inner = inner
        self.verdict = verdict
        self.keeping = keeping
        self.limit = limit
        self.status = 0
        self.fields: tuple[tuple[bytes, bytes], ...] = ()
        self.pieces: list[bytes] = []
        self.size = 0
        self.ended = False

    @property
    def started(self) -> bool:
        return self.inner.started

    def start(self, status: int, headers: Fields) -> None:
        self.status = status
        self.fields = tuple(headers)
        self.inner.start(status, (*self.fields, (HEADER, self.verdict)))

    async def write(self, data: bytes) -> None:
        if self.keeping:
            self.size += len(data)
            if self.size > self.limit:
                self.keeping, self.pieces = False, []  # too large to keep: stop holding it
            else:
                self.pieces.append(bytes(data))
        await self.inner.write(data)

    async def end(self, trailers: Fields | None = None) -> None:
        self.ended = True
        await self.inner.end(trailers)

    def flush(self) -> None:
        self.inner.flush()


@dataclass(slots=True)
class Ticket:
    """One request's use of the cache: ``served`` when a hit answered it; else the handler writes through
    ``writer`` and calls ``keep`` after its answer ended."""

    served: bool
    writer: ResponseWriter
    key: str = ""
    cache: ResponseCache | None = None

    async def keep(self, record: LlmRecord) -> None:
        writer = self.writer
        if self.cache is None or not isinstance(writer, RecordingWriter) or not writer.keeping:
            return
        if writer.status != 200 or not writer.ended or record.error or not writer.pieces:
            return
        entry = CachedAnswer(
            writer.fields,
            tuple(writer.pieces),
            record.usage,
            record.provider,
            record.provider_model,
            time.time(),
        )
        await self.cache.put(self.key, entry)


class ResponseCache:
    """One per caching llm route (in each worker): its memory entries and, if configured, the Redis store
    shared by every route and reload of the worker that names the same URL."""

    __slots__ = ("memory", "redis", "route", "settings")

    def __init__(self, settings: CacheSettings, route: str, memory: MemoryCache | None = None) -> None:
        self.settings = settings
        self.route = route
        self.memory = memory or MemoryCache(settings.max_bytes, settings.ttl)
        self.redis: RedisCache | None = shared_redis(settings.redis_url) if settings.redis_url else None

    async def lookup(
        self, ex: Exchange, pivot: Json, client_format: str, record: LlmRecord, out: ResponseWriter
    ) -> Ticket:
        """A hit replayed to the client (``served``), or the writer the answer goes through."""
        directive = (ex.header(b"cache-control") or b"").lower()
        if (
            not deterministic(pivot)
            or b"no-store" in directive
            or ex.header(b"x-fastgw-provider-key") is not None
        ):
            return Ticket(False, RecordingWriter(out, b"bypass", False, 0))
        scope = scope_id(self.settings.scope, ex.consumer)
        key = cache_key(self.route, client_format, scope, pivot)
        if b"no-cache" not in directive:
            entry = await self._get(key)
            if entry is not None:
                await _replay(out, entry, record)
                return Ticket(True, out)
        writer = RecordingWriter(out, b"miss", True, self.settings.max_entry_bytes)
        return Ticket(False, writer, key, self)

    async def _get(self, key: str) -> CachedAnswer | None:
        entry = self.memory.get(key)
        if entry is not None or self.redis is None:
            return entry
        settings = self.settings
        deadline = settings.redis_timeout + settings.max_entry_bytes / REDIS_BYTES_PER_SECOND
        found = await self.redis.get(key, deadline)
        if found is None:
            return None
        value, left = found
        entry = decode(value)
        if entry is None:
            return None
        # Stored under the route's settings of its day: a reload that lowered ttl or max_entry_bytes
        # applies to what Redis kept before it too (the key holds neither). Its age is the ttl it was
        # stored with less what Redis says is left: no two nodes' clocks compared (one running ahead by
        # the ttl never got a hit); an entry stored without its ttl (an older version's) is aged by them.
        if entry.ttl > 0:
            age = max(0.0, entry.ttl - left)
            entry = replace(entry, created=time.time() - age)  # the Age header, on our clock
        else:
            age = time.time() - entry.created
        if age >= settings.ttl or sum(map(len, entry.pieces)) > settings.max_entry_bytes:
            return None
        self.memory.put(key, entry, min(left, settings.ttl - age))
        return entry

    async def put(self, key: str, entry: CachedAnswer) -> None:
        self.memory.put(key, entry)
        if self.redis is not None:
            settings = self.settings
            value = encode(entry, settings.ttl)
            deadline = settings.redis_timeout + len(value) / REDIS_BYTES_PER_SECOND
            await self.redis.put(key, value, settings.ttl, deadline)


async def _replay(out: ResponseWriter, entry: CachedAnswer, record: LlmRecord) -> None:
    """The stored answer as it was first sent, one write per original write; the record says it was a
    hit: no provider call, zero tokens used, the original call's tokens saved."""
    age = max(0, int(time.time() - entry.created))
    record.cache_hit = True
    record.cost_usd = 0.0  # a replay costs nothing: priced, so the ledger's row stays priced
    record.tokens_saved = entry.usage.total_tokens
    record.usage = Usage(reported=entry.usage.reported)
    record.provider, record.provider_model = entry.provider, entry.provider_model
    out.start(200, (*entry.fields, (HEADER, b"hit"), (b"age", b"%d" % age)))
    for piece in entry.pieces:  # no time to first token: a hit is not the provider's latency
        await out.write(piece)
    await out.end()


def cache_of(spec: CacheSpec | None, ctx: CompileContext) -> ResponseCache | None:
    """The route's ResponseCache, or None when it has no ``cache`` table (kind.py's one call)."""
    return None if spec is None else ResponseCache(compile_cache(spec, ctx), ctx.route_name)
