"""Node-wide rate limits without a global lock: sliding-window counters in shared memory, one shard per
worker (DESIGN.md "Counters"; the table itself is counters/table.py).

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

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from fastgw.counters.algorithms import UNCAPPED, Concurrency, Counter, Gcra, Quota, SlidingWindow
from fastgw.counters.cluster import ClusterCounts
from fastgw.counters.cluster_slot import CLUSTER
from fastgw.counters.table import CounterTable, KeyCells, key_hash
from fastgw.counters.windows import IN_FLIGHT
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending, Phase
from fastgw.policy.wait_queue import WaitQueue

# The per-limit key cache of each worker (key value -> KeyCells): a hit saves a blake2b and a probe (~1 us).
# Keys are client input (addresses, header values), so it is bounded in count (cleared when full: the
# counts are in the shared table, nothing is lost) and in bytes (longer values are hashed every time): an
# entry costs at most ~550 bytes, so at most ~9 MiB per limit per worker (65536 entries allowed ~36 MiB).
KEY_CACHE_MAX: Final = 16384
KEY_CACHE_VALUE_MAX: Final = 256
_time: Final = time.time  # Final: a C static in the compiled module, not a module-dict lookup
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
    limit_id: bytes  # stable across reloads: "route:name", and the kind unless a quota (rate_limit_config)
    rate: int  # requests admitted per window
    window: float  # seconds
    key: Literal["ip", "route", "consumer", "api_key", "header"]
    header: bytes  # for key = "header"
    shadow: bool
    concurrency: int = 0  # > 0: a concurrency limit (requests in flight), rate and window unused
    gcra: bool = False  # GCRA (rate + burst) instead of a sliding window
    burst: int = 0  # GCRA: requests admitted at once on top of the rate
    quota: str = ""  # "day" | "month": rate per UTC calendar period, persisted (counters/quota.py)
    queue: int = 0  # > 0: requests over the limit wait (up to this many per worker) instead of a 429
    max_wait: float = 0.0  # seconds a queued request waits before its 429


def _own_rate(limit: LimitSpec, overrides: dict[str, int], rate: int) -> int:
    """A consumer's own number for ``limit`` (limits keyed by consumer or key only), else ``rate``."""
    return overrides.get(limit.name, rate) if limit.key in _CONSUMER_KEYS else rate


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
                self._counter(limit, table),
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

    @staticmethod
    def _counter(limit: LimitSpec, table: CounterTable) -> Counter:
        """The algorithm counting ``limit``, picked once per compile."""
        if limit.gcra:
            return Gcra(table, limit.window, limit.burst, limit.limit_id)
        if limit.quota:
            return Quota(table, limit.window, limit.quota, limit.limit_id)
        if limit.concurrency:
            return Concurrency(table, limit.window)
        return SlidingWindow(table, limit.window)

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
        # What each limit counted (its counter, key and what undoes it), to take back if a later one refuses.
        taken: list[tuple[Counter, KeyCells, float]] | None = [] if self._several else None
        refused: tuple[LimitSpec, float, float, str | bytes] | None = None
        share = 2.0  # the share left of the rated limit nearest exhaustion (the one the headers show) ...
        shown: bytes | None = None  # ... its RateLimit item prefix, requests left and seconds to reset
        shown_left = shown_reset = 0.0
        in_flight: tuple[KeyCells, ...] = ()
        overrides: dict[str, int] | None = None
        if self._per_consumer and ex.consumer is not None:
            overrides = getattr(ex.consumer, "limits", None) or None
        cluster = CLUSTER.current
        queues = self.queues if may_wait and self.queues else None
        behind = False
        for limit, keys, counter, base_rate, by_ip, prefix, shows in self._plan:
            value = ex.client_ip if by_ip else self._key(limit, ex)
            rate = base_rate if overrides is None else _own_rate(limit, overrides, base_rate)
            key = keys.get(value) or self._new_key(keys, limit, value)
            if queues is not None and refused is None:  # requests of this key wait: behind them
                queue = queues.get(limit.name)
                behind = queue is not None and queue.waiting_for(value)
            # Count this request under a limit while nothing refused it yet, if there is room (a shadow
            # limit counts it regardless: it only records would-be refusals).
            cap = -1.0 if refused is not None or behind else UNCAPPED if limit.shadow else float(rate)
            remaining = counter.admit(key, value, now, cap, rate, shows, cluster)
            if counter.unavailable:  # cluster mode, the shared store down, failure = "closed"
                if taken:
                    self._take_back(taken, cluster)
                ex.limit_state = None
                return UNAVAILABLE
            if counter.counted:
                if taken is not None:
                    taken.append((counter, key, counter.when))
                if counter.holds:
                    in_flight += (key,)
            reset = counter.reset
            if shows and (remaining - 1) / rate < share:
                share = (remaining - 1) / rate
                shown, shown_left, shown_reset = prefix, remaining - 1, reset
            if remaining < 1 or behind:
                if limit.shadow:
                    if ex.shadow is None:
                        ex.shadow = []
                    ex.shadow.append(f"rate_limit.{limit.name}")
                elif refused is None or reset > refused[2]:
                    refused = (limit, remaining, reset, value)
                behind = False
        if refused is not None:
            if taken:
                self._take_back(taken, cluster)
            ex.limit_state = None  # nothing stays counted: nothing to release
            limit, remaining, reset, value = refused
            queue = self.queues.get(limit.name) if may_wait else None
            if queue is not None:
                waiting = queue.admit(ex, time.monotonic(), value)
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

    def _take_back(self, taken: list[tuple[Counter, KeyCells, float]], cluster: ClusterCounts | None) -> None:
        """Undo what one check counted before a later limit refused the request."""
        for counter, key, when in taken:
            counter.take_back(key, when, cluster)

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
