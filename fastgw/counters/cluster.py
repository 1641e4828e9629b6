"""Cluster-wide sliding-window counts through Redis, without Redis on the request path.

Several gateways (nodes) behind one load balancer share their sliding-window limits through Redis. A
request never waits for Redis: each worker (a *participant*) decides from the last global counts it read
plus its own admissions not yet sent, and a background Task flushes those admissions every
``flush_interval`` (pipelined ``INCRBY`` + ``EXPIRE``, one round trip) and reads back the totals of the
keys asked about since the last flush (``MGET`` in chunks): the cost grows with the keys in use, not with
every key seen in the last two windows (a per-address limit sees many). A key asked about again after
flushes that did not read it decides from a stale total until the next read, so it counts as a new
window's does (its share only, below) until a settled read.

Keys are ``fgw:rl:<key hash>:<window index>``, the same blake2b hash the node-local table uses, so every
node agrees on them; window indexes come from the wall clock, so nodes need synchronised clocks (NTP).

Participants: every flush also records its time in the ``fgw:rl:participants`` sorted set (last in the
pipeline, so whoever reads that entry also sees the counts sent before it) and first reads how many
participants there are (P; at least this node's workers) and the oldest entry. A flush runs every
interval even when idle: it is how the others know this worker has nothing unsent.

Error bound: a participant learns of others' admissions at most one flush interval plus one round trip
late. With P participants each offered R requests a second, at most (P - 1) x R x (interval + rtt)
requests beyond the limit can be admitted in a window. Onset (a window this worker has not seen before,
e.g. the first after idle, and every window after an outage): all see zero, so until a *settled* read
(one taken after every participant has flushed at least one interval after this worker first saw the
window) each worker counts its own admissions P times over, i.e. takes its share (about limit / P).
Participants that start together stop at limit + P - 1; one that starts after the others settled adds
at most min(limit / P, R x (interval + rtt)) before its own first read: the onset is bounded by limit +
(P - 1) x (ceil(limit / P) + 1), measured at 200-300 for limit 200 on 2 nodes x 2 workers (2.6-3.3x the
limit before). The price: during a window's first two intervals or so, a worker admits its share only
(the room it leaves is used once reads settle). GCRA and concurrency limits stay node-local (their state
is not additive, or lives in flight).

Redis down (a flush fails or takes longer than ``timeout``): ``failure = "open"`` falls back to the
node-local table (limits hold per node), ``"closed"`` refuses requests on cluster-limited routes with
503. Either way nothing waits on Redis, a log line marks the outage and the recovery (the URL without
credentials), and the ``fastgw_ratelimit_redis_up`` / ``_errors`` metrics show it. Detection and
recovery never depend on traffic: the flush runs every interval, idle or not, and once it fails it
becomes a reconnect probe (a fresh connection each time) with a backoff doubling from the interval up to
``PROBE_MAX``, so a worker is back within PROBE_MAX + timeout of the store's return (measured: ~0.3 s
after a 5 s outage, both modes). Admissions made while Redis was down are counted locally, and sent with
the first flush that works while their window still matters: a probe first PINGs the store, and only a
store that answers gets the batch. A batch sent whose answer does not come within ``timeout`` may have
been applied: it is not sent again (sending it again counted it once more on every probe for as long as
Redis stayed slow, an inflated total that refused clients for up to two windows); if the store had in
fact taken none of it, the cluster total misses that one flush of this worker's admissions, which the
node's own count still holds (a decision takes the larger of the two, below).

A stopping worker sends what is pending in one last round trip (``stop``). Lost counts: a Redis
restarted empty (no persistence) forgets the window's counts, and a worker killed
while Redis was down takes its unsent admissions with it (they stay in the node's shared-memory table,
which the replacement worker does not resend). Either way the cluster estimate can fall below what this
node alone admitted, so a decision takes the larger of the two: a node never admits past the limit on
its own counts, and the cluster's overshoot after such a loss is bounded by the other nodes' shares.
One more read of the node's table per admission, cluster mode only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from typing import Any, Final
from urllib.parse import urlsplit

from fastgw.log_line import log_line
from fastgw.snapshot import RedisSettings

_PREFIX: Final = b"fgw:rl:"
_MGET_CHUNK: Final = 512  # keys per MGET: one command per chunk, not one per key
_PARTICIPANTS: Final = b"fgw:rl:participants"  # sorted set: participant id -> its last flush (unix s)
# A participant whose last flush is this old (dead, cut off from Redis, or starved) no longer counts
# towards P nor holds back settling (at least this long, and at least four flush intervals: one slow
# round trip never drops a live participant). Short, because a dead worker's entry delays every settle.
PARTICIPANT_TTL: Final = 1.0
# Most seconds between two reconnect probes while the store is down (after backoff from flush_interval):
# recovery is seen within PROBE_MAX + timeout of the store's return, inside the 2 s the issue asks for,
# at two connection attempts a second per worker against a store that is down.
PROBE_MAX: Final = 0.5


def _name(key: tuple[int, int]) -> bytes:
    return b"%s%x:%d" % (_PREFIX, key[0] & 0xFFFFFFFFFFFFFFFF, key[1])


def _timed_out(exc: Exception) -> bool:
    """A flush with no answer in time: asyncio's deadline (the builtin TimeoutError) or the client's
    socket_timeout (redis's own TimeoutError, no subclass of it)."""
    from redis.exceptions import TimeoutError as RedisTimeout

    return isinstance(exc, (TimeoutError, RedisTimeout))


def _where(url: str) -> str:
    """The store's address for log lines: scheme, host and port only (a URL may carry a password)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}"
    except ValueError:
        return "the configured store"


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
        self.asked: set[tuple[int, int]] = set()  # keys count() was asked about since the last flush
        self.fresh: set[tuple[int, int]] = set()  # keys whose total the last flush read (or wrote)
        self._forgot_at = 0.0  # when _forget_old last ran (it walks every watched key: once a second)
        self.participants = 1  # P, as last read from the participants set (count() raises it to the floor)
        # (key hash, window) -> when this worker first saw it (unix s). Unsettled until a read taken once
        # every participant has flushed since one interval after that: the read then includes whatever
        # each admitted in its first interval of the window. Until then this worker takes its share only.
        self.unsettled: dict[tuple[int, int], float] = {}
        self._ttl = max(PARTICIPANT_TTL, 4 * settings.flush_interval)
        self.own: dict[tuple[int, int], int] = {}  # (key hash, window) -> this worker's admissions flushed
        self.ident = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"  # this participant
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- request path (sync) -------------------------------------------------------------------------
    def count(
        self, key_hash: int, window: int, weight_previous: float, length: float, floor: int = 1
    ) -> float | None:
        """The cluster estimate for a key, or None while Redis is unavailable.

        A window this worker has no settled read of yet (see ``_unsettled``) counts as the larger of its
        last read plus this worker's unsent admissions, and this worker's own admissions P times over (P:
        the participants, at least ``floor``, this node's workers): each is assumed to have admitted as
        many, so each stops at its share of the limit until reads show what the others did.
        """
        current = (key_hash, window)
        previous = (key_hash, window - 1)
        watched = self.watched
        if current not in watched:  # watched even while down: deltas counted meanwhile are still sent
            self._watch(current, length)
            if previous not in watched:
                self._watch(previous, length)
        if not self.up:
            return None
        asked = self.asked
        if current not in asked:  # the first ask since the last flush: read with the next one
            asked.add(current)
            asked.add(previous)
            self._unless_fresh(current)
            self._unless_fresh(previous)
        pending = self.pending
        mine_now = pending.get(current, 0)
        mine_before = pending.get(previous, 0)
        inflight = self.inflight
        if inflight:
            mine_now += inflight.get(current, 0)
            mine_before += inflight.get(previous, 0)
        remote = self.remote
        now_count = remote.get(current, 0) + mine_now
        before = remote.get(previous, 0) + mine_before
        unsettled = self.unsettled
        if unsettled:  # the onset of a window (or of a recovery): no more than this worker's share
            share = self.participants if self.participants > floor else floor
            if current in unsettled:
                now_count = max(now_count, (self.own.get(current, 0) + mine_now) * share)
            if previous in unsettled:
                before = max(before, (self.own.get(previous, 0) + mine_before) * share)
        return now_count + before * weight_previous

    def _unless_fresh(self, key: tuple[int, int]) -> None:
        """A key the last flush did not read: its total may be stale (others admitted meanwhile), so this
        worker takes its share only until a settled read, as in a new window."""
        if key not in self.fresh and key in self.remote and key not in self.unsettled:
            self.unsettled[key] = time.time()

    def _watch(self, key: tuple[int, int], length: float) -> None:
        """Start watching a window, unsettled (see ``unsettled``)."""
        self.watched[key] = length
        self.unsettled[key] = time.time()

    def add(self, key_hash: int, window: int, count: int = 1) -> None:
        key = (key_hash, window)
        self.pending[key] = self.pending.get(key, 0) + count

    # -- background flush and probe ------------------------------------------------------------------------
    def start(self) -> None:
        self._client = self._new_client()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _new_client(self) -> Any:
        """A client with no retries of its own: the flush loop is the retry (and the reconnect probe),
        and a retry's backoff inside a flush would only run into ``timeout``."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        s = self.settings
        return aioredis.Redis.from_url(
            s.url, socket_timeout=s.timeout, socket_connect_timeout=s.timeout, retry=Retry(NoBackoff(), 0)
        )

    async def stop(self) -> None:
        """End the flush Task, in bounded time even if the cancellation is lost. Python 3.11's
        ``asyncio.wait_for`` drops a cancellation that lands as the awaited call completes (a failing
        Redis made that likely while the flush used it; fastgw now uses ``asyncio.timeout`` everywhere),
        and a library below may do the same: the loop also checks ``_stopping``, and the wait is bounded.
        (Awaiting the Task under ``suppress(CancelledError)`` would also swallow a cancellation of
        ``stop`` itself.) Then sends what is pending (admissions since the last flush: a reload that
        changed [rate_limits.redis], or a stopping worker, lost up to one interval of them from the
        cluster's counts) and leaves the participants set so P shrinks at once, in one round trip within
        ``timeout``, best effort."""
        if self._stopping:
            return  # stopped (or stopping) already: a reload's and the shutdown's stop may overlap
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=self.settings.timeout + 1.0)
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: never an "exception was never retrieved" warning at exit
        if self._client is not None:
            with contextlib.suppress(Exception):
                if self.up:
                    pipe = self._client.pipeline(transaction=False)
                    # Not the batch of a flush cut by the cancellation (``inflight``): sent, it may have
                    # counted, and is not sent again (as after a timeout, in ``flush``).
                    batch, self.pending = self.pending, {}
                    for key, delta in batch.items():
                        if delta and key in self.watched:
                            self._add_to(pipe, key, delta)
                    pipe.zrem(_PARTICIPANTS, self.ident)
                    async with asyncio.timeout(self.settings.timeout):
                        await pipe.execute()
            with contextlib.suppress(Exception):
                await self._client.aclose()

    async def _run(self) -> None:
        """Flush every ``flush_interval`` while the store is up (idle or not: the flush is also the sign
        of life others settle on); while it is down, probe it with a backoff that doubles from
        ``flush_interval`` up to ``PROBE_MAX``, whether or not requests come."""
        interval = self.settings.flush_interval
        delay = interval
        while not self._stopping:
            await asyncio.sleep(delay)
            await self.flush()
            delay = interval if self.up else min(max(delay, interval) * 2, PROBE_MAX)

    async def flush(self) -> None:
        """One round trip: read the participants set, send this worker's admissions, read the totals it
        watches, and record this flush in the participants set (last: whoever sees that entry sees the
        counts sent before it). While the store is down this is the reconnect probe. Never raises."""
        if not self.up and not await self._answers():
            return  # still away: what is pending waits for a flush that can send it
        now = time.time()
        batch, self.pending = self.pending, {}
        asked, self.asked = self.asked, set()
        if now - self._forgot_at >= 1.0:
            self._forgot_at = now
            self._forget_old(now)
        written = [key for key, delta in batch.items() if delta]
        watched = self.watched
        read_only = [key for key in asked if key not in batch and key in watched]
        self.inflight = batch
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.zremrangebyscore(_PARTICIPANTS, "-inf", now - self._ttl)
            pipe.zrange(_PARTICIPANTS, 0, 0, withscores=True)  # the participant that flushed longest ago
            pipe.zcard(_PARTICIPANTS)
            for key in written:  # INCRBY answers with the new total: no separate read
                self._add_to(pipe, key, batch[key])
            for start in range(0, len(read_only), _MGET_CHUNK):
                pipe.mget([_name(key) for key in read_only[start : start + _MGET_CHUNK]])
            pipe.zadd(_PARTICIPANTS, {self.ident: now})
            pipe.expire(_PARTICIPANTS, int(10 * self._ttl) + 1)  # a cluster gone leaves nothing behind
            async with asyncio.timeout(self.settings.timeout):
                results = await pipe.execute()
            oldest = float(results[1][0][1]) if results[1] else now
            participants = int(results[2])
            body = results[3:-2]
            totals = [int(body[2 * i] or 0) for i in range(len(written))]  # INCRBY's new totals
            values = [int(v or 0) for chunk in body[2 * len(written) :] for v in chunk]
        except Exception as exc:  # any failure of the store (or of its answer): fall back, say so once
            self.asked |= asked  # read with the next flush that works
            # No answer within the timeout: the store may well have applied the batch (it was sent: a
            # probe checked the connection first). Sent again, it was counted once more on every probe
            # while the store stayed slow. Dropped, it is missing at most once (a store that took none).
            self._failed({} if _timed_out(exc) else batch, exc)
            await self._reconnect()
            return
        self.inflight = {}
        remote = self.remote
        own = self.own
        for key, total in zip(written, totals, strict=True):
            remote[key] = total
            own[key] = own.get(key, 0) + batch[key]
        for key, value in zip(read_only, values, strict=True):
            remote[key] = value
        self.fresh = {*written, *read_only}
        self.participants = max(1, participants)
        unsettled = self.unsettled
        if not self.up:
            self.up = True
            # Back from an outage: the others send what they counted meanwhile with their first flush
            # that works. Until every participant has (or has expired), shares again.
            for key in self.watched:
                unsettled[key] = now
            log_line(f"rate-limit store {_where(self.settings.url)} is back: cluster-wide limits again")
        elif unsettled:
            since = oldest - self.settings.flush_interval  # everyone's first interval from then is in
            for key in [key for key, seen in unsettled.items() if seen <= since]:
                del unsettled[key]

    def _add_to(self, pipe: Any, key: tuple[int, int], delta: int) -> None:
        """Queue ``delta`` for ``key`` on ``pipe``: its INCRBY, and an expiry two of its windows on."""
        name = _name(key)
        pipe.incrby(name, delta)
        pipe.expire(name, int(2 * self.watched.get(key, 60.0)) + 1)

    async def _answers(self) -> bool:
        """The reconnect probe, on a fresh connection: does the store answer a PING within the timeout?
        Only then is a batch sent (whose answer, if late, would leave it unknown whether it counted)."""
        try:
            async with asyncio.timeout(self.settings.timeout):
                await self._client.ping()
        except Exception:
            self.errors += 1
            await self._reconnect()
            return False
        return True

    async def _reconnect(self) -> None:
        """A fresh client for the next try: a connection cut mid-reply never serves the next command."""
        old, self._client = self._client, self._new_client()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.settings.timeout):
                await old.aclose()

    def _failed(self, batch: dict[tuple[int, int], int], exc: Exception) -> None:
        """A flush or probe that failed: keep the deltas whose window still matters for the next flush,
        and mark the store down (once)."""
        self.inflight = {}
        watched = self.watched
        pending = self.pending
        for key, delta in batch.items():
            if key in watched:  # older windows decide nothing any more: not kept through a long outage
                pending[key] = pending.get(key, 0) + delta
        self.errors += 1
        if self.up:
            self.up = False
            fallback = "node-local limits" if self.failure == "open" else "refusing (503)"
            log_line(f"rate-limit store {_where(self.settings.url)} unavailable ({exc!r}): {fallback}")

    def _forget_old(self, now: float) -> None:
        """Stop watching windows more than one window in the past."""
        stale = [key for key, length in self.watched.items() if (key[1] + 2) * length < now]
        for key in stale:
            del self.watched[key]
            self.remote.pop(key, None)
            self.own.pop(key, None)
            self.unsettled.pop(key, None)
