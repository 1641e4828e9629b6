"""Cluster-wide sliding-window counts through Redis, without Redis on the request path.

Several gateways (nodes) behind one load balancer share their sliding-window limits through Redis. A
request never waits for Redis: each worker decides from the last global counts it read plus its own
admissions not yet sent, and a background Task flushes those admissions every ``flush_interval``
(pipelined ``INCRBY`` + ``EXPIRE``, one round trip) and reads back the totals of every key it is watching
(the keys it saw in the last two windows, by ``MGET`` in chunks: the cost grows with distinct keys).

Keys are ``fgw:rl:<key hash>:<window index>``, the same blake2b hash the node-local table uses, so every
node agrees on them; window indexes come from the wall clock, so nodes need synchronised clocks (NTP).

Error bound: a participant (a worker) learns of others' admissions at most one flush interval plus one
round trip late. With P participants each offered R requests a second, at most (P - 1) x R x
(interval + rtt) requests beyond the limit can be admitted in a window, and never more than (P - 1) x
limit (when every participant sees the same stale total at a window's start). GCRA and concurrency limits
stay node-local (their state is not additive, or lives in flight).

Redis down (a flush fails or takes longer than ``timeout``): ``failure = "open"`` falls back to the
node-local table (limits hold per node), ``"closed"`` refuses requests on cluster-limited routes with
503. Either way nothing waits on Redis, a log line marks the outage and the recovery, and the
``fastgw_ratelimit_redis_up`` / ``_errors`` metrics show it. Admissions made while Redis was down are
counted locally only; a failed flush's deltas are kept for the next one (a flush that failed after Redis
applied it can count those admissions twice: at most one interval's worth, on the safe side).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any, Final

from fastgw.snapshot import RedisSettings

_PREFIX: Final = b"fgw:rl:"
_MGET_CHUNK: Final = 512  # keys per MGET: one command per chunk, not one per key


def _name(key: tuple[int, int]) -> bytes:
    return b"%s%x:%d" % (_PREFIX, key[0] & 0xFFFFFFFFFFFFFFFF, key[1])


class ClusterCounts:
    """One worker's view of the cluster's counts, and its not-yet-flushed admissions."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.failure = settings.failure
        self.up = True  # optimistic until the first flush says otherwise: a start never refuses
        self.errors = 0
        self.pending: dict[tuple[int, int], int] = {}  # (key hash, window) -> admissions not flushed
        self.inflight: dict[tuple[int, int], int] = {}  # the batch of the flush under way
        self.remote: dict[tuple[int, int], int] = {}  # (key hash, window) -> last total read from Redis
        self.watched: dict[tuple[int, int], float] = {}  # (key hash, window) -> window length (s)
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- request path (sync) -------------------------------------------------------------------------
    def count(self, key_hash: int, window: int, weight_previous: float, length: float) -> float | None:
        """The cluster estimate for a key, or None while Redis is unavailable."""
        if not self.up:
            return None
        current = (key_hash, window)
        previous = (key_hash, window - 1)
        watched = self.watched
        if current not in watched:
            watched[current] = length
            watched[previous] = length
        remote = self.remote
        pending = self.pending
        now_count = remote.get(current, 0) + pending.get(current, 0)
        before = remote.get(previous, 0) + pending.get(previous, 0)
        inflight = self.inflight
        if inflight:
            now_count += inflight.get(current, 0)
            before += inflight.get(previous, 0)
        return now_count + before * weight_previous

    def add(self, key_hash: int, window: int, count: int = 1) -> None:
        key = (key_hash, window)
        self.pending[key] = self.pending.get(key, 0) + count

    # -- background flush ---------------------------------------------------------------------------------
    def start(self) -> None:
        import redis.asyncio as aioredis

        s = self.settings
        self._client = aioredis.Redis.from_url(
            s.url, socket_timeout=s.timeout, socket_connect_timeout=s.timeout, retry_on_timeout=False
        )
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """End the flush Task, in bounded time even if the cancellation is lost. Python 3.11's
        ``asyncio.wait_for`` drops a cancellation that lands as the awaited call completes (a failing
        Redis made that likely while the flush used it; fastgw now uses ``asyncio.timeout`` everywhere),
        and a library below may do the same: the loop also checks ``_stopping``, and the wait is bounded.
        (Awaiting the Task under ``suppress(CancelledError)`` would also swallow a cancellation of
        ``stop`` itself.)"""
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=self.settings.timeout + 1.0)
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: never an "exception was never retrieved" warning at exit
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    async def _run(self) -> None:
        interval = self.settings.flush_interval
        while not self._stopping:
            await asyncio.sleep(interval)
            await self.flush()

    async def flush(self) -> None:
        batch, self.pending = self.pending, {}
        self._forget_old(time.time())
        self.inflight = batch
        written = [key for key, delta in batch.items() if delta]
        read_only = [key for key in self.watched if key not in batch]
        if not written and not read_only:
            return
        pipe = self._client.pipeline(transaction=False)
        for key in written:  # INCRBY answers with the new total: no separate read
            name = _name(key)
            pipe.incrby(name, batch[key])
            pipe.expire(name, int(2 * self.watched.get(key, 60.0)) + 1)
        for start in range(0, len(read_only), _MGET_CHUNK):
            pipe.mget([_name(key) for key in read_only[start : start + _MGET_CHUNK]])
        try:
            async with asyncio.timeout(self.settings.timeout):
                results = await pipe.execute()
        except Exception as exc:
            self.inflight = {}  # any failure of the store: fall back, keep the deltas, say so once
            for key, delta in batch.items():
                self.pending[key] = self.pending.get(key, 0) + delta
            self.errors += 1
            if self.up:
                self.up = False
                fallback = "node-local limits" if self.failure == "open" else "refusing (503)"
                _log(f"rate-limit store {self.settings.url} unavailable ({exc!r}): {fallback}")
            return
        self.inflight = {}
        remote = self.remote
        for i, key in enumerate(written):
            remote[key] = int(results[2 * i] or 0)  # INCRBY's new total (EXPIRE's flag follows)
        values = [v for chunk in results[2 * len(written) :] for v in chunk]
        for key, value in zip(read_only, values, strict=True):
            remote[key] = int(value or 0)
        if not self.up:
            self.up = True
            _log(f"rate-limit store {self.settings.url} is back: cluster-wide limits again")

    def _forget_old(self, now: float) -> None:
        """Stop watching windows more than one window in the past."""
        stale = [key for key, length in self.watched.items() if (key[1] + 2) * length < now]
        for key in stale:
            del self.watched[key]
            self.remote.pop(key, None)


def _log(message: str) -> None:
    sys.stderr.write(f"fastgw: {message}\n")
    sys.stderr.flush()


class ClusterHolder:
    """The worker's ClusterCounts, or None when no Redis is configured (set at start and on reload)."""

    def __init__(self) -> None:
        self.current: ClusterCounts | None = None

    async def configure(self, settings: RedisSettings | None) -> None:
        current = self.current
        if current is not None and settings == current.settings:
            return
        if current is not None:
            await current.stop()
        self.current = None
        if settings is not None:
            counts = ClusterCounts(settings)
            counts.start()
            self.current = counts


CLUSTER: Final = ClusterHolder()
