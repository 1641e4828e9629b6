"""Node-wide rate limits without a global lock: sliding-window counters in shared memory, one shard per
worker (DESIGN.md "Counters").

Layout: the ``ratelimit`` region holds one shard per worker slot; a shard is ``capacity`` cells of four
int64 ``(key hash, window, count in window, count in the window before)``. A worker writes only its own
shard (single writer, no lock); a check reads the key's cell in every shard and sums. Keys are hashed with
blake2b over the limit's stable id (``route:name``) and the key value, so a reload that keeps a limit
keeps its counts, and ``hash()`` (randomised per process) is never used.

Sliding window (the Cloudflare estimate): ``count(now) = current + previous x (1 - elapsed/window)``,
summed over shards; a request is admitted when ``count + 1 <= limit``, then counted in the worker's own
shard. Error bound: workers decide from the shards' last values, so between a read and a write up to
``workers - 1`` other admissions may land: at most ``limit + workers - 1`` in any aligned window. The
estimate treats the previous window as evenly spread, so across unaligned windows it can admit more or
fewer than ``limit`` when traffic was bursty at the previous window's edges (documented in the README).

GCRA (``algorithm = "gcra"``: rate + burst) keeps a theoretical arrival time, which is not additive across
shards; each worker instead runs its share (rate/n, burst/n, a static token lease) in its own memory. n
workers saturated by many clients admit rate x T + burst together; traffic that reaches only some workers
gets only their shares (documented in the README).

Capacity: ``capacity`` cells per shard, probed linearly over 8 slots; a worker reuses its own cells once
their window is more than one window old. When all 8 are live (the table is full for that hash), the key
is counted in a per-worker dict instead: limiting continues, exact per worker but not shared, and the
event is counted (``table_full``) and logged once.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending, Phase
from fastgw.policy.cluster_counts import CLUSTER
from fastgw.policy.quota import QUOTAS
from fastgw.policy.wait_queue import WaitQueue

CELL_INTS: Final = 4  # key hash, window, current count, previous count
IN_FLIGHT: Final = -1  # the window value that marks a concurrency cell (its count: requests in flight)
PROBES: Final = 8
_I64: Final = struct.Struct("<q")
_time = time.time
_SLIDING, _GCRA, _CONCURRENCY, _QUOTA = range(4)  # a limit's kind, decided once per compile
_CONSUMER_KEYS: Final = frozenset({"consumer", "api_key"})  # limits a consumer's overrides apply to


# Cluster mode with failure = "closed" while the shared store is down.
UNAVAILABLE: Final = Denial(
    503,
    "rate-limit-unavailable",
    "the shared rate-limit store is unavailable",
    "rate_limit.unavailable",
    ((b"retry-after", b"1"),),
)


@dataclass(frozen=True, slots=True)
class LimitSpec:
    name: str
    limit_id: bytes  # stable across reloads: "route:name"
    rate: int  # requests admitted per window
    window: float  # seconds
    key: Literal["ip", "route", "consumer", "api_key", "header"]
    header: bytes  # for key = "header"
    shadow: bool
    concurrency: int = 0  # > 0: a concurrency limit (requests in flight), rate and window unused
    gcra: bool = False  # GCRA (rate + burst) instead of a sliding window
    burst: int = 0  # GCRA: requests admitted at once on top of the rate
    quota: str = ""  # "day" | "month": rate per UTC calendar period, persisted (policy/quota.py)
    queue: int = 0  # > 0: requests over the limit wait (up to this many per worker) instead of a 429
    max_wait: float = 0.0  # seconds a queued request waits before its 429


class CounterTable:
    """The shared table as seen by one worker (or by nobody, before a worker configures it)."""

    def __init__(self) -> None:
        self.cells: memoryview | None = None  # int64 view over all shards
        self.slot = 0
        self.shards = 0
        self.capacity = 0
        self.local: dict[tuple[int, int], list[int]] = {}  # overflow: (hash, window) -> [count]
        self.table_full = 0
        self._where: dict[int, list[int]] = {}  # key hash -> its cell index in each shard (-1: not seen)

    def attach(self, region: mmap.mmap, slot: int, shards: int, capacity: int) -> None:
        self.cells = memoryview(region).cast("q")
        self.slot = slot
        self.shards = shards
        self.capacity = capacity

    def _find(self, shard: int, key_hash: int) -> int:
        """Cell index of key_hash in a shard, or -1."""
        cells = self.cells
        assert cells is not None
        base = shard * self.capacity
        start = key_hash % self.capacity
        for probe in range(PROBES):
            index = (base + (start + probe) % self.capacity) * CELL_INTS
            stored = cells[index]
            if stored == key_hash:
                return index
            if stored == 0:
                return -1
        return -1

    def _indexes(self, key_hash: int) -> list[int]:
        where = self._where.get(key_hash)
        if where is None:
            if len(self._where) >= 4 * self.capacity:
                self._where.clear()
            where = self._where[key_hash] = [-1] * self.shards
        return where

    def count(self, key_hash: int, window: int, weight_previous: float) -> float:
        """The sliding estimate for key_hash, summed over every shard.

        Cell positions are remembered per key (checked against the stored hash on every read, since a
        shard's owner may reuse a stale cell for another key), so a steady-state read is a few int loads.
        """
        cells = self.cells
        if cells is None:
            return 0.0
        current = previous = 0
        where = self._where.get(key_hash) or self._indexes(key_hash)
        capacity = self.capacity
        home = key_hash % capacity
        for shard in range(self.shards):
            index = where[shard]
            if index < 0 or cells[index] != key_hash:
                if cells[(shard * capacity + home) * CELL_INTS] == 0:
                    continue  # the key's first probe slot is empty: not in this shard (one load)
                index = where[shard] = self._find(shard, key_hash)
                if index < 0:
                    continue
            cell_window = cells[index + 1]
            if cell_window == window:
                current += cells[index + 2]
                previous += cells[index + 3]
            elif cell_window == window - 1:
                previous += cells[index + 2]
        if self.local:  # the overflow counts, almost always empty
            local = self.local.get((key_hash, window))
            if local is not None:
                current += local[0]
        return current + previous * weight_previous

    def add(self, key_hash: int, window: int) -> None:
        """Count one admission in this worker's own shard (the only shard it ever writes)."""
        cells = self.cells
        if cells is None:
            return
        where = self._where.get(key_hash) or self._indexes(key_hash)
        own = where[self.slot]
        if own >= 0 and cells[own] == key_hash:
            if cells[own + 1] == window:  # the steady state: one more in the current window
                cells[own + 2] += 1
            else:
                self._bump(own, window)
            return
        capacity = self.capacity
        base = self.slot * capacity
        start = key_hash % capacity
        free = -1
        for probe in range(PROBES):
            index = (base + (start + probe) % capacity) * CELL_INTS
            stored = cells[index]
            if stored == key_hash:
                where[self.slot] = index
                self._bump(index, window)
                return
            if free < 0 and (stored == 0 or 0 <= cells[index + 1] < window - 1):
                free = index  # empty, or ours and stale (never a concurrency cell): reusable
            if stored == 0:
                break
        if free >= 0:
            cells[free + 1] = window
            cells[free + 2] = 1
            cells[free + 3] = 0
            cells[free] = key_hash  # published last: readers never see a half-written cell as this key
            where[self.slot] = free
            return
        self.table_full += 1
        if self.table_full == 1:
            sys.stderr.write("fastgw: rate-limit table full for a key: counting it per worker (see README)\n")
        cell = self.local.setdefault((key_hash, window), [0])
        cell[0] += 1
        if len(self.local) > 65536:
            self.local.clear()

    def in_flight(self, key_hash: int) -> int:
        """Requests in flight for a concurrency key, summed over every shard."""
        return int(self.count(key_hash, IN_FLIGHT, 0.0))

    def release(self, key_hash: int) -> None:
        """One request of this worker finished: its own shard's in-flight count goes down."""
        cells = self.cells
        if cells is None:
            return
        index = self._indexes(key_hash)[self.slot]
        if index >= 0 and cells[index] == key_hash and cells[index + 2] > 0:
            cells[index + 2] -= 1
        else:
            cell = self.local.get((key_hash, IN_FLIGHT))
            if cell is not None and cell[0] > 0:
                cell[0] -= 1

    def release_shard(self, shard: int) -> int:
        """A worker died: zero the in-flight counts of its shard (the supervisor's job). Returns how many."""
        cells = self.cells
        if cells is None:
            return 0
        released = 0
        for cell in range(shard * self.capacity, (shard + 1) * self.capacity):
            index = cell * CELL_INTS
            if cells[index] and cells[index + 1] == IN_FLIGHT and cells[index + 2]:
                released += cells[index + 2]
                cells[index + 2] = 0
        return released

    def _bump(self, index: int, window: int) -> None:
        cells = self.cells
        assert cells is not None
        cell_window = cells[index + 1]
        if cell_window != window:
            cells[index + 3] = cells[index + 2] if cell_window == window - 1 else 0
            cells[index + 2] = 0
            cells[index + 1] = window
        cells[index + 2] += 1


COUNTERS: Final = CounterTable()


def _own_rate(limit: LimitSpec, overrides: dict[str, int], rate: int) -> int:
    """A consumer's own number for ``limit`` (limits keyed by consumer or key only), else ``rate``."""
    return overrides.get(limit.name, rate) if limit.key in _CONSUMER_KEYS else rate


def key_hash(limit_id: bytes, value: bytes) -> int:
    digest = hashlib.blake2b(limit_id + b"\0" + value, digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


class RateLimit:
    """All limits of one route; a request must pass every one, and is counted only when it does."""

    PHASE: ClassVar[Phase] = Phase.RATE_LIMIT

    def __init__(self, name: str, limits: tuple[LimitSpec, ...], table: CounterTable) -> None:
        self.name = name
        self.limits = limits
        self.table = table
        self.shadow = False  # shadow mode is per limit: a shadow limit records, never returns, a denial
        self._hashes: list[dict[str | bytes, int]] = [{} for _ in limits]  # per limit: key -> stable hash
        self.has_concurrency = any(limit.concurrency for limit in limits)
        self.needs_complete = self.has_concurrency  # only in-flight counts are given back on completion
        self._tat: dict[int, float] = {}  # GCRA theoretical arrival times, this worker's share
        self.rated = tuple(limit for limit in limits if not limit.concurrency)
        self.queues = {
            limit.name: WaitQueue(
                limit.queue,
                limit.max_wait,
                self._recheck,
                Denial(
                    429,
                    "rate-limited",
                    f"waited {limit.max_wait:g}s for rate limit {limit.name!r} in vain",
                    f"rate_limit.{limit.name}.wait",
                    ((b"retry-after", b"1"),),
                ),
            )
            for limit in limits
            if limit.queue and not limit.shadow
        }
        self._plan = tuple(
            (
                limit,
                hashes,
                _GCRA
                if limit.gcra
                else _QUOTA
                if limit.quota
                else _CONCURRENCY
                if limit.concurrency
                else _SLIDING,
            )
            for limit, hashes in zip(limits, self._hashes, strict=True)
        )
        self._per_consumer = any(limit.key in _CONSUMER_KEYS for limit in limits)
        self._item = {limit.name: b'"%s";r=' % limit.name.encode() for limit in limits}  # RateLimit item
        self.policy_header = self._policy_for({})  # what every client without its own numbers sees

    def _key(self, limit: LimitSpec, ex: Exchange) -> str | bytes:
        """What the limit counts by. A str is hashed as its UTF-8 bytes (so keys, and the counts and quotas
        stored under their hashes, are the same whichever form a key takes), but looked up as it is."""
        kind = limit.key
        if kind == "ip":
            return ex.client_ip
        if kind == "route":
            return b""
        if kind in _CONSUMER_KEYS:
            consumer: Any = ex.consumer
            if consumer is None:
                return "ip:" + ex.client_ip
            if kind == "api_key":
                key_id = getattr(consumer, "key_id", None)  # tokens and certificates: their consumer
                if key_id is not None:
                    return "key:" + str(key_id)
            return str(consumer.consumer_id)
        for name, value in ex.headers:
            if name == limit.header:
                return value
        return b""

    def _recheck(self, ex: Exchange) -> Denial | None:
        return self.check(ex, False)  # type: ignore[return-value]

    def check(self, ex: Exchange, may_wait: bool = True) -> Denial | Pending | None:
        """Pass, refuse, or (a limit with a queue, ``may_wait``) park the request until there is room."""
        now = _time()
        table = self.table
        states: list[tuple[LimitSpec, int, float, float, float]] = []  # limit, hash, window|TAT, left, reset
        refused: tuple[LimitSpec, float, float] | None = None
        overrides: dict[str, int] | None = None
        if self._per_consumer and ex.consumer is not None:
            overrides = getattr(ex.consumer, "limits", None) or None
        cluster = CLUSTER.current
        for limit, hashes, kind in self._plan:
            value = ex.client_ip if limit.key == "ip" else self._key(limit, ex)
            rate = limit.rate if kind != _CONCURRENCY else limit.concurrency
            if overrides is not None:
                rate = _own_rate(limit, overrides, rate)
            hashed = hashes.get(value, 0)
            if not hashed:
                if len(hashes) >= 65536:
                    hashes.clear()
                raw = value.encode() if isinstance(value, str) else value
                hashed = hashes[value] = key_hash(limit.limit_id, raw)
            remaining: float
            when: float  # sliding: the window to count in; concurrency: IN_FLIGHT; GCRA: the new arrival time
            if kind == _SLIDING:
                position = now / limit.window
                window = int(position)
                when = window
                weight = 1.0 - (position - window)
                counted: float | None
                if cluster is None:
                    counted = table.count(hashed, window, weight)  # this node's workers
                else:
                    counted = cluster.count(hashed, window, weight, limit.window)
                    if counted is None:  # the shared store is down
                        if cluster.failure == "closed":
                            ex.limit_state = None
                            return UNAVAILABLE
                        counted = table.count(hashed, window, weight)
                remaining = rate - counted
                reset = (window + 1) * limit.window - now
            elif kind == _GCRA:
                # GCRA with per-worker shares (a static token lease): each of the n workers runs rate/n and
                # burst/n on its own, so n saturated workers admit rate x T + burst together.
                shares = max(1, table.shards)
                interval = limit.window / rate * shares
                tolerance = limit.burst / shares * interval
                when = max(self._tat.get(hashed, 0.0), now) + interval
                remaining = (tolerance - (when - now)) / interval * shares + 1
                reset = max(0.0, when - tolerance - now)
            elif kind == _QUOTA:
                when, reset = QUOTAS.period(limit.quota, now)
                if hashed not in QUOTAS.names:
                    QUOTAS.name(hashed, limit.limit_id, value)
                remaining = rate - QUOTAS.base.get((hashed, when), 0) - table.count(hashed, when, 0.0)
            else:  # concurrency
                when = IN_FLIGHT
                remaining = rate - table.in_flight(hashed)
                reset = 1.0
            states.append((limit, hashed, when, remaining - 1, reset))
            if remaining < 1:
                if limit.shadow:
                    if ex.shadow is None:
                        ex.shadow = []
                    ex.shadow.append(f"rate_limit.{limit.name}")
                elif refused is None or reset > refused[2]:
                    refused = (limit, remaining, reset)
        ex.limit_state = states
        if refused is not None:
            ex.limit_state = None  # nothing was counted: nothing to release
            limit, remaining, reset = refused
            queue = self.queues.get(limit.name) if may_wait else None
            if queue is not None:
                waiting = queue.admit(ex, time.monotonic())
                if waiting is not None:
                    return Pending(waiting)
            return self._denial(limit, reset, queue is not None, overrides)
        for limit, hashed, when, _remaining, _reset in states:
            if limit.gcra:
                tat_map = self._tat
                if len(tat_map) >= 65536:
                    tat_map.clear()
                tat_map[hashed] = when  # for GCRA the "window" slot carries the new theoretical time
            else:
                table.add(hashed, int(when))
                if limit.quota:
                    QUOTAS.add(hashed, int(when))
                elif cluster is not None and not limit.concurrency:
                    cluster.add(hashed, int(when))
        return None

    def _denial(
        self, limit: LimitSpec, reset: float, queued: bool, overrides: dict[str, int] | None = None
    ) -> Denial:
        retry = max(1, math.ceil(reset))
        full = " and its queue is full" if queued else ""
        rate = _own_rate(limit, overrides, limit.rate) if overrides else limit.rate
        if limit.concurrency:
            detail = f"concurrency limit {limit.name!r} ({limit.concurrency} in flight) reached{full}"
            return Denial(429, "rate-limited", detail, f"rate_limit.{limit.name}", ((b"retry-after", b"1"),))
        return Denial(
            429,
            "rate-limited",
            f"rate limit {limit.name!r} ({rate} per {limit.window:g}s) exceeded{full}",
            f"rate_limit.{limit.name}",
            (
                (b"retry-after", b"%d" % retry),
                (b"ratelimit-policy", self._policy_for(overrides) if overrides else self.policy_header),
                (b"ratelimit", b'"%s";r=0;t=%d' % (limit.name.encode(), retry)),
            ),
        )

    def _policy_for(self, overrides: dict[str, int]) -> bytes:
        """RateLimit-Policy with a consumer's own quotas where it has them (rare: built per request)."""
        return b", ".join(
            b'"%s";q=%d;w=%d'
            % (
                limit.name.encode(),
                _own_rate(limit, overrides, limit.rate),
                max(1, round(limit.window)),
            )
            for limit in self.rated
        )

    def on_complete(self, ex: Exchange) -> None:
        """Runs once per admitted exchange, aborted ones included: in-flight counts go back down, and
        requests waiting for them get their turn at once."""
        if self.has_concurrency and ex.limit_state:
            for limit, hashed, _window, _remaining, _reset in ex.limit_state:
                if limit.concurrency:
                    self.table.release(hashed)
            for queue in self.queues.values():
                if queue.length:
                    queue.service(time.monotonic())

    def on_response(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> None:
        states = ex.limit_state
        if not states or not self.rated:
            return
        if self.has_concurrency:
            states = [state for state in states if not state[0].concurrency]
        closest = states[0]
        if len(states) > 1:  # the limit with the smallest share left is the one the client should see
            share = closest[3] / closest[0].rate
            for state in states:
                if state[3] / state[0].rate < share:
                    closest = state
                    share = state[3] / state[0].rate
        limit, _hashed, _window, remaining, reset = closest
        overrides = getattr(ex.consumer, "limits", None) if self._per_consumer else None
        headers.append(
            (b"ratelimit-policy", self._policy_for(overrides) if overrides else self.policy_header)
        )
        left = int(remaining)
        headers.append(
            (b"ratelimit", b"%s%d;t=%d" % (self._item[limit.name], left if left > 0 else 0, math.ceil(reset)))
        )
