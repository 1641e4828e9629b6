"""Node-wide rate limits without a global lock: sliding-window counters in shared memory, one shard per
worker (DESIGN.md "Counters").

Layout: the ``ratelimit`` region holds one shard per worker slot; a shard is ``capacity`` cells of four
int64 ``(key hash, window, count in window, count in the window before)``. A worker writes only its own
shard (single writer, no lock); a check reads the key's cell in every shard and sums. Keys are hashed with
blake2b over the limit's stable id (``route:name``) and the key value, so a reload that keeps a limit
keeps its counts, and ``hash()`` (randomised per process) is never used.

Sliding window (the Cloudflare estimate): ``count(now) = current + previous x (1 - elapsed/window)``,
summed over shards; a request is admitted when ``count + 1 <= limit``, then counted in the worker's own
shard, in the same pass over the shards (a worker's own cell is written by it alone). A route's limits are
checked in one pass too: each counts the request as it passes it, and a later refusal takes those counts
back before the loop yields (another worker reading in between may see one too many: that can only refuse,
never over-admit). Error bound: workers decide from the shards' last values, so between a read and a
write up to ``workers - 1`` other admissions may land: at most ``limit + workers - 1`` in any aligned
window. The estimate treats the previous window as evenly spread, so across unaligned windows it can
admit more or fewer than ``limit`` when traffic was bursty at the previous window's edges (see
docs/rate-limits.md).

GCRA (``algorithm = "gcra"``: rate + burst) keeps a theoretical arrival time, which is not additive across
shards; each worker instead runs its share (rate/n, burst/n, a static token lease) in its own memory. n
workers saturated by many clients admit rate x T + burst together; traffic that reaches only some workers
gets only their shares (documented in docs/rate-limits.md).

Retry-After (and the RateLimit header's ``t`` when it says ``r=0``) is the time until a request would be
admitted if nothing else were: for a sliding window, when the weighted estimate leaves room
(``sliding_wait``; the window's end is not it, since the full window then weighs 1); for GCRA, when the
next arrival falls within the tolerance (exact for the worker that answered: each runs its own share);
for a quota, the period's end. A concurrency limit cannot know when a request in flight ends: its
``Retry-After: 1`` is a hint. Shadow limits send no RateLimit headers: they refuse nothing.

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
# The per-limit key cache of each worker (key value -> KeyCells): a hit saves a blake2b and a probe (~1 us).
# Keys are client input (addresses, header values), so it is bounded in count (cleared when full: the
# counts are in the shared table, nothing is lost) and in bytes (longer values are hashed every time): an
# entry costs at most ~550 bytes, so at most ~9 MiB per limit per worker (65536 entries allowed ~36 MiB).
KEY_CACHE_MAX: Final = 16384
KEY_CACHE_VALUE_MAX: Final = 256
_CELL: Final = struct.Struct("=4q")  # one cell as stored: key hash, window, current, previous
_time: Final = time.time  # Final: a C static in the compiled module, not a module-dict lookup
_UNCAPPED: Final = math.inf  # a shadow limit's cap: it counts every request it sees
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


class KeyCells:
    """One key of one limit as this worker knows it: its stable hash; where its cell lies in each shard
    (``where``: a cached guess, checked against the stored hash on every read, since a shard's owner may
    reuse a stale cell for another key); and, for sliding windows, a copy of this worker's own cell
    (window, current, previous), valid while ``generation`` is the table's (``CounterTable.sliding``).
    """

    __slots__ = ("current", "generation", "hash", "previous", "where", "window")

    def __init__(self, key_hash: int, where: list[int]) -> None:
        self.hash = key_hash
        self.where = where
        self.generation = -1  # no copy yet
        self.window = self.current = self.previous = 0


class CounterTable:
    """The shared table as seen by one worker (or by nobody, before a worker configures it).

    Callers keep, per key, where its cell lies in each shard (``where``, from ``locate``): a cached guess,
    checked against the stored hash on every read, since a shard's owner may reuse a stale cell for
    another key. A steady-state read is then one ``unpack_from`` per shard.
    """

    def __init__(self) -> None:
        self.region: mmap.mmap | None = None
        self.cells: memoryview | None = None  # int64 view over all shards
        self.slot = 0
        self.shards = 0
        self.capacity = 0
        self.local: dict[tuple[int, int], list[int]] = {}  # overflow: (hash, window) -> [count]
        self.table_full = 0
        self.generation = 0  # moves when this worker's cells change hands: KeyCells copies go stale

    def attach(self, region: mmap.mmap, slot: int, shards: int, capacity: int) -> None:
        self.region = region
        self.cells = memoryview(region).cast("q")
        self.slot = slot
        self.shards = shards
        self.capacity = capacity
        self.generation += 1

    def locate(self, key_hash: int) -> list[int]:
        """A new key's place in each shard: ``~home`` (negative: not found there yet; ``home`` is its first
        probe slot, so one load tells whether the shard's owner has since counted it)."""
        return [~self._home(shard, key_hash) for shard in range(self.shards)]

    def _home(self, shard: int, key_hash: int) -> int:
        """Index of key_hash's first probe slot in a shard."""
        return (shard * self.capacity + key_hash % self.capacity) * CELL_INTS

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

    def count(
        self, key_hash: int, where: list[int], window: int, weight_previous: float, cap: float = -1.0
    ) -> float:
        """The sliding estimate for key_hash, summed over every shard. When it leaves room for one more
        under ``cap``, this request is counted too, in this worker's own shard, in the same pass."""
        cells = self.cells
        if cells is None:
            return 0.0
        current, previous, own, own_count = self._read_shards(key_hash, where, window, -1)
        counted = current + previous * weight_previous
        if counted + 1 <= cap:
            if own >= 0:
                cells[own + 2] = own_count + 1  # the steady state: one more in our cell's current window
            else:
                self.add(key_hash, where, window)
        return counted

    def sliding(self, key: KeyCells, window: int, weight_previous: float, cap: float) -> float:
        """``count`` for a sliding-window key, this worker's own cell read from the key's copy of it.

        The copy is trusted while ``key.generation`` equals the table's: this worker is its cell's only
        writer, every write to it goes through here or drops the copy, and the generation moves whenever
        this worker gives one of its cells to another key. Other shards are read as in ``count``.
        """
        cells = self.cells
        if cells is None or key.generation != self.generation:
            counted = self.count(key.hash, key.where, window, weight_previous, cap)
            self._sync(key)
            return counted
        own_window = key.window
        if own_window == window:
            own_current, own_previous = key.current, key.previous
        elif own_window == window - 1:
            own_current, own_previous = 0, key.current
        else:
            own_current = own_previous = 0
        current, previous = own_current, own_previous
        if self.shards > 1 or self.local:  # other workers' shards, and the overflow (almost always empty)
            others, before, _own, _count = self._read_shards(key.hash, key.where, window, self.slot)
            current += others
            previous += before
        counted = current + previous * weight_previous
        if counted + 1 <= cap:
            own = key.where[self.slot]
            if own_window != window:  # a new window: the one that ended becomes the previous one
                key.previous = own_previous
                key.window = window
                cells[own + 3] = own_previous
                cells[own + 2] = 0
                cells[own + 1] = window
            key.current = own_current + 1
            cells[own + 2] = own_current + 1
        return counted

    def _sync(self, key: KeyCells) -> None:
        """Copy this worker's own cell for ``key`` (after the generic path counted it), or drop the copy."""
        key.generation = -1
        region = self.region
        own = key.where[self.slot]
        if region is None or own < 0:
            return
        stored, window, current, previous = _CELL.unpack_from(region, own << 3)
        if stored == key.hash:
            key.window, key.current, key.previous = window, current, previous
            key.generation = self.generation

    def _read_shards(
        self, key_hash: int, where: list[int], window: int, skip: int
    ) -> tuple[int, int, int, int]:
        """key_hash's counts in ``window`` and the one before, summed over every shard but ``skip``; and
        this worker's own cell with its count in ``window`` (-1, -1: none, or not in this window)."""
        region = self.region
        cells = self.cells
        assert region is not None and cells is not None
        current = previous = 0
        slot = self.slot
        own = own_count = -1
        for shard, cached in enumerate(where):
            if shard == skip:
                continue
            at = cached
            cell: tuple[int, int, int, int] | None = None
            if at >= 0:
                cell = _CELL.unpack_from(region, at << 3)
            if cell is None or cell[0] != key_hash:
                if at < 0 and not cells[~at]:
                    continue  # the key's first probe slot is still empty: not in this shard (one load)
                at = self._find(shard, key_hash)
                where[shard] = at if at >= 0 else ~self._home(shard, key_hash)
                if at < 0:
                    continue
                cell = _CELL.unpack_from(region, at << 3)
            _stored, cell_window, in_window, before = cell
            if cell_window == window:
                current += in_window
                previous += before
                if shard == slot:
                    own, own_count = at, in_window
            elif cell_window == window - 1:
                previous += in_window
        if self.local:  # the overflow counts, almost always empty
            local = self.local.get((key_hash, window))
            if local is not None:
                current += local[0]
        return current, previous, own, own_count

    def add(self, key_hash: int, where: list[int], window: int) -> None:
        """Count one admission in this worker's own shard (the only shard it ever writes)."""
        cells = self.cells
        if cells is None:
            return
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
            if cells[free]:
                self.generation += 1  # another key's stale cell: copies of it must not be trusted
            cells[free + 1] = window
            cells[free + 2] = 1
            cells[free + 3] = 0
            cells[free] = key_hash  # published last: readers never see a half-written cell as this key
            where[self.slot] = free
            return
        self.table_full += 1
        if self.table_full == 1:
            sys.stderr.write(
                "fastgw: rate-limit table full for a key: counting it per worker (see docs/rate-limits.md)\n"
            )
        cell = self.local.setdefault((key_hash, window), [0])
        cell[0] += 1
        if len(self.local) > 65536:
            self.local.clear()

    def take_back(self, key_hash: int, where: list[int], window: int) -> None:
        """Undo one ``add`` of this worker (a request that finished, or one a later limit refused)."""
        cells = self.cells
        if cells is None:
            return
        index = where[self.slot]
        if index >= 0 and cells[index] == key_hash and cells[index + 1] == window and cells[index + 2] > 0:
            cells[index + 2] -= 1
        else:
            cell = self.local.get((key_hash, window))
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


def sliding_wait(current: float, previous: float, rate: float, elapsed: float, length: float) -> float:
    """Seconds until the sliding estimate ``current + previous x (1 - elapsed / length)`` leaves room for
    one more request (``<= rate - 1``), if nothing else is admitted meanwhile: what Retry-After must say
    for a client that obeys it to pass at its first retry.

    The estimate falls as the previous window's weight does; if this window's own count is already over,
    the wait runs into the next window, where this count becomes the previous one and falls in turn.
    (The end of the window is not the answer: right after it, the full window just ended weighs 1.)
    """
    room = rate - 1
    if current <= room:
        if previous <= 0 or current + previous * (1 - elapsed / length) <= room:
            return 0.0
        return length * (1 - (room - current) / previous) - elapsed
    return length - elapsed + length * (1 - room / current)


def key_hash(limit_id: bytes, value: bytes) -> int:
    digest = hashlib.blake2b(limit_id + b"\0" + value, digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


class RateLimit:
    """All limits of one route; a request must pass every one, and is counted only when it does.

    ``check`` leaves on the Exchange what the response needs, already rendered for the limit nearest
    exhaustion: ``(RateLimit-Policy header, RateLimit header, in-flight keys to release)``, so
    ``on_response`` only appends two prebuilt pairs.
    """

    PHASE: ClassVar[Phase] = Phase.RATE_LIMIT

    def __init__(self, name: str, limits: tuple[LimitSpec, ...], table: CounterTable) -> None:
        self.name = name
        self.limits = limits
        self.table = table
        self.shadow = False  # shadow mode is per limit: a shadow limit records, never returns, a denial
        self._keys: list[dict[str | bytes, KeyCells]] = [{} for _ in limits]  # per limit: key -> cells
        self._several = len(limits) > 1  # one limit never has counts of an earlier one to take back
        self.has_concurrency = any(limit.concurrency for limit in limits)
        self.needs_complete = self.has_concurrency  # only in-flight counts are given back on completion
        self._tat: dict[int, float] = {}  # GCRA theoretical arrival times, this worker's share
        # What RateLimit-Policy advertises: enforced rate limits only. A shadow limit refuses nothing, so a
        # client must not slow down for it (nor for a concurrency limit, which has no rate).
        self.rated = tuple(limit for limit in limits if not limit.concurrency and not limit.shadow)
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
                keys,
                _GCRA
                if limit.gcra
                else _QUOTA
                if limit.quota
                else _CONCURRENCY
                if limit.concurrency
                else _SLIDING,
                limit.concurrency or limit.rate,
                limit.key == "ip",
                b'"%s";r=' % limit.name.encode(),  # the RateLimit item, up to its number
                limit in self.rated,  # shown in the RateLimit header when nearest exhaustion
            )
            for limit, keys in zip(limits, self._keys, strict=True)
        )
        self._per_consumer = any(limit.key in _CONSUMER_KEYS for limit in limits)
        self.policy_header = self._policy_for({})  # what every client without its own numbers sees
        self._policy_pair = (b"ratelimit-policy", self.policy_header)

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

    def _new_key(self, keys: dict[str | bytes, KeyCells], limit: LimitSpec, value: str | bytes) -> KeyCells:
        """The cells of a key not in ``keys``, remembered there unless the value is long (a header value
        is the client's choice: remembering 16 KiB values would make the cache 16 KiB an entry). The
        counts live in the shared table, so a key forgotten here (cleared when full) loses nothing."""
        hashed = key_hash(limit.limit_id, value.encode() if isinstance(value, str) else value)
        key = KeyCells(hashed, self.table.locate(hashed))
        if len(value) <= KEY_CACHE_VALUE_MAX:
            if len(keys) >= KEY_CACHE_MAX:
                keys.clear()
            keys[value] = key
        return key

    def _recheck(self, ex: Exchange) -> Denial | None:
        return self.check(ex, False)  # type: ignore[return-value]

    def check(self, ex: Exchange, may_wait: bool = True) -> Denial | Pending | None:
        """Pass, refuse, or (a limit with a queue, ``may_wait``) park the request until there is room.

        One pass: each limit that has room counts the request at once; if a later limit refuses, what the
        earlier ones counted is taken back (refusals are the rare case, and all of it runs without a yield,
        so no other request of this worker sees the interim counts).
        """
        now = _time()
        table = self.table
        # What each limit counted (kind, key, window or old TAT), to take back if a later limit refuses.
        taken: list[tuple[int, KeyCells, float]] | None = [] if self._several else None
        refused: tuple[LimitSpec, float, float] | None = None
        share = 2.0  # the share left of the rated limit nearest exhaustion (the one the headers show) ...
        shown: bytes | None = None  # ... its RateLimit item prefix, requests left and seconds to reset
        shown_left = shown_reset = 0.0
        in_flight: tuple[KeyCells, ...] = ()
        overrides: dict[str, int] | None = None
        if self._per_consumer and ex.consumer is not None:
            overrides = getattr(ex.consumer, "limits", None) or None
        cluster = CLUSTER.current
        for limit, keys, kind, base_rate, by_ip, prefix, shows in self._plan:
            value = ex.client_ip if by_ip else self._key(limit, ex)
            rate = base_rate if overrides is None else _own_rate(limit, overrides, base_rate)
            key = keys.get(value) or self._new_key(keys, limit, value)
            hashed, where = key.hash, key.where
            # Count this request under a limit while nothing refused it yet, if there is room (a shadow
            # limit counts it regardless: it only records would-be refusals).
            cap = -1.0 if refused is not None else _UNCAPPED if limit.shadow else float(rate)
            remaining: float
            if kind == _SLIDING:
                position = now / limit.window
                window = math.floor(position)
                weight = 1.0 - (position - window)
                counted: float | None
                if cluster is None:
                    counted = table.sliding(key, window, weight, cap)  # this node's workers
                else:
                    key.generation = -1  # counted below without the key's copy of its own cell
                    counted = cluster.count(hashed, window, weight, limit.window, table.shards)
                    if counted is None:  # the shared store is down
                        if cluster.failure == "closed":
                            if taken:
                                self._take_back(taken, cluster)
                            ex.limit_state = None
                            return UNAVAILABLE
                        counted = table.count(hashed, where, window, weight)
                    if counted + 1 <= cap:  # the cluster decides: count here and in the batch for Redis
                        table.add(hashed, where, window)
                        cluster.add(hashed, window)
                if counted + 1 <= cap and taken is not None:  # counted above: by table.sliding or
                    taken.append((kind, key, window))  # the cluster branch
                remaining = rate - counted
                if remaining < 2 and shows:  # refused, or the headers will say r=0: when is one admitted?
                    reset = self._sliding_wait(key, window, now, limit.window, rate, cluster)
                else:
                    reset = (window + 1) * limit.window - now
            elif kind == _GCRA:
                # GCRA with per-worker shares (a static token lease): each of the n workers runs rate/n and
                # burst/n on its own, so n saturated workers admit rate x T + burst together.
                shares = table.shards or 1
                interval = limit.window / rate * shares
                tolerance = limit.burst / shares * interval
                tat_map = self._tat
                old = tat_map.get(hashed, 0.0)
                arrival = (old if old > now else now) + interval
                remaining = (tolerance - (arrival - now)) / interval * shares + 1
                # Admitted when the arrival lies within the tolerance: this request's wait if refused, the
                # next one's (one interval later) once this one is admitted.
                reset = max(arrival - tolerance - now, 0.0)
                if cap > 0 and (remaining >= 1 or cap == _UNCAPPED):
                    if len(tat_map) >= 65536:
                        tat_map.clear()
                    tat_map[hashed] = arrival
                    reset = max(arrival + interval - tolerance - now, 0.0)
                    if taken is not None:
                        taken.append((kind, key, old))
            elif kind == _QUOTA:
                period, reset = QUOTAS.period(limit.quota, now)
                if hashed not in QUOTAS.names:
                    QUOTAS.name(hashed, limit.limit_id, value)
                base = QUOTAS.base.get((hashed, period), 0)  # counted before this run
                counted = base + table.count(hashed, where, period, 0.0, cap - base)
                remaining = rate - counted
                if counted + 1 <= cap:
                    QUOTAS.add(hashed, period)
                    if taken is not None:
                        taken.append((kind, key, period))
            else:  # concurrency
                busy = table.count(hashed, where, IN_FLIGHT, 0.0, cap)  # requests in flight, every shard
                remaining = rate - busy
                reset = 1.0
                if busy + 1 <= cap:
                    if taken is not None:
                        taken.append((kind, key, IN_FLIGHT))
                    in_flight += (key,)
            if shows and (remaining - 1) / rate < share:
                share = (remaining - 1) / rate
                shown, shown_left, shown_reset = prefix, remaining - 1, reset
            if remaining < 1:
                if limit.shadow:
                    if ex.shadow is None:
                        ex.shadow = []
                    ex.shadow.append(f"rate_limit.{limit.name}")
                elif refused is None or reset > refused[2]:
                    refused = (limit, remaining, reset)
        if refused is not None:
            if taken:
                self._take_back(taken, cluster)
            ex.limit_state = None  # nothing stays counted: nothing to release
            limit, remaining, reset = refused
            queue = self.queues.get(limit.name) if may_wait else None
            if queue is not None:
                waiting = queue.admit(ex, time.monotonic())
                if waiting is not None:
                    return Pending(waiting)
            return self._denial(limit, reset, queue is not None, overrides)
        if shown is None:  # concurrency and shadow limits only: no RateLimit headers
            ex.limit_state = (None, None, in_flight)
        else:
            policy = self._policy_pair
            if overrides is not None:
                policy = (b"ratelimit-policy", self._policy_for(overrides))
            left = math.floor(shown_left) if shown_left > 0 else 0
            item = b"%s%d;t=%d" % (shown, left, math.ceil(shown_reset))  # typed: compiled, no % parsing
            ex.limit_state = (policy, (b"ratelimit", item), in_flight)
        return None

    def _sliding_wait(
        self, key: KeyCells, window: int, now: float, length: float, rate: int, cluster: Any
    ) -> float:
        """Seconds until a sliding-window limit admits a request again (see ``sliding_wait``), from the
        counts as they stand (this request included if it was admitted). Only near exhaustion: it reads
        the counts twice more."""
        current = both = None
        if cluster is not None:
            current = cluster.count(key.hash, window, 0.0, length, self.table.shards)
            both = cluster.count(key.hash, window, 1.0, length, self.table.shards)
        if current is None or both is None:  # node-local, or the shared store is down ("open")
            current = self.table.count(key.hash, key.where, window, 0.0)
            both = self.table.count(key.hash, key.where, window, 1.0)
        return sliding_wait(current, both - current, rate, now - window * length, length)

    def _take_back(self, taken: list[tuple[int, KeyCells, float]], cluster: Any) -> None:
        """Undo what one check counted before a later limit refused the request."""
        table = self.table
        for kind, key, when in taken:
            hashed = key.hash
            if kind == _GCRA:
                self._tat[hashed] = when  # the arrival time before this request
                continue
            window = int(when)
            table.take_back(hashed, key.where, window)
            key.generation = -1  # its cell changed behind the key's copy: re-read on the next count
            if kind == _QUOTA:
                QUOTAS.add(hashed, window, -1)
            elif kind == _SLIDING and cluster is not None:
                cluster.add(hashed, window, -1)

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
        state = ex.limit_state
        if self.has_concurrency and state:
            for key in state[2]:
                self.table.take_back(key.hash, key.where, IN_FLIGHT)
            for queue in self.queues.values():
                if queue.length:
                    queue.service(time.monotonic())

    def on_response(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> None:
        state = ex.limit_state
        if state is None or state[0] is None:
            return
        headers.append(state[0])
        headers.append(state[1])
