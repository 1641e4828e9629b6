"""One class per counting algorithm behind one interface (``Counter``), so a new kind of limit (a token
budget) is one more class. Each instance serves one limit of one route in one worker.

``admit`` counts one request when there is room under ``cap`` and returns the requests left (before
this one); it leaves on the instance what the caller reads right after: ``counted`` (this request was
counted), ``when`` (what ``take_back`` needs to undo it), ``reset`` (seconds until a request would be
admitted, or until the window ends) and, for a sliding window in cluster mode, ``unavailable`` (the
shared store is down and failure = "closed"). Results on the instance instead of a returned tuple: no
allocation per request, and a check is synchronous, so nothing runs between ``admit`` and the reads.

A common base class with overridden methods, not a Protocol: mypyc dispatches these natively (vtables).
The algorithms themselves (sliding estimate, GCRA shares, quota periods, in-flight counts) are
described in policy/rate_limit.py, which uses them.
"""

from __future__ import annotations

import math
from typing import Final

from fastgw.counters.cluster import ClusterCounts
from fastgw.counters.quota import QUOTAS
from fastgw.counters.table import CounterTable, KeyCells
from fastgw.counters.windows import IN_FLIGHT

UNCAPPED: Final = math.inf  # a shadow limit's cap: it counts every request it sees
TAT_MAX: Final = (
    65536  # GCRA arrival times kept per limit per worker (cleared when full: keys are client input)
)
# This worker's GCRA arrival times by limit id (stable across reloads): a reload compiles new Gcra
# objects, which used to start empty and give every key a fresh burst, though a reload that keeps a
# limit keeps its counts (a sliding window's live in the node's table).
GCRA_TIMES: Final[dict[bytes, dict[int, float]]] = {}


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


class Counter:
    """The interface every algorithm implements (see the module docstring)."""

    def __init__(self, table: CounterTable, window: float) -> None:
        self.table = table
        self.window = window  # seconds (a quota: its period's nominal length)
        self.holds = False  # an admitted request holds its count until it completes (concurrency)
        self.counted = False
        self.unavailable = False
        self.when = 0.0
        self.reset = 0.0

    def admit(
        self,
        key: KeyCells,
        value: str | bytes,
        now: float,
        cap: float,
        rate: int,
        shows: bool,
        cluster: ClusterCounts | None,
    ) -> float:
        raise NotImplementedError

    def take_back(self, key: KeyCells, when: float, cluster: ClusterCounts | None) -> None:
        """Undo one ``admit`` that counted (``when`` is what it left in ``self.when``)."""
        self.table.take_back(key.hash, key.where, int(when))
        self.table.drop_copy(key)  # its cell changed behind the copy: re-read on the next count


# cluster_count's answer while the shared store is down and its failure mode is "closed".
CLOSED: Final = -1.0


def cluster_count(
    table: CounterTable, key: KeyCells, window: int, weight: float, length: float, cluster: ClusterCounts
) -> float:
    """What a cluster-mode decision counts for ``key``'s window: the cluster's count (Redis), never less
    than this node's own workers' count (the shared store lost counts: counters/cluster.py), which
    stands in for it while the store is down and fails open; ``CLOSED`` while it fails closed. Shared by
    the sliding window and the allowances (counters/allowance.py)."""
    table.drop_copy(key)  # counted here without a copy of its own cell
    shared = cluster.count(key.hash, window, weight, length, table.shards)
    if shared is None and cluster.failure == "closed":
        return CLOSED
    local = table.count(key.hash, key.where, window, weight)
    return local if shared is None or shared < local else shared


class SlidingWindow(Counter):
    """The sliding-window estimate over every worker's shard (or the cluster's counts in Redis)."""

    def admit(
        self,
        key: KeyCells,
        value: str | bytes,
        now: float,
        cap: float,
        rate: int,
        shows: bool,
        cluster: ClusterCounts | None,
    ) -> float:
        table = self.table
        length = self.window
        position = now / length
        window = math.floor(position)
        weight = 1.0 - (position - window)
        counted: float
        if cluster is None:
            counted = table.sliding(key, window, weight, cap, 1, length)  # this node's workers
        else:
            counted = cluster_count(table, key, window, weight, length, cluster)
            if counted == CLOSED:
                self.unavailable = True
                self.counted = False
                return 0.0
            if counted + 1 <= cap:  # the cluster decides: count here and in the batch for Redis
                table.add(key.hash, key.where, window, 1, length)
                cluster.add(key.hash, window)
        self.unavailable = False
        self.counted = counted + 1 <= cap
        self.when = float(window)
        remaining = rate - counted
        if remaining < 2 and shows:  # refused, or the headers will say r=0: when is one admitted?
            self.reset = self._wait(key, window, now, rate, cluster)
        else:
            self.reset = (window + 1) * length - now
        return remaining

    def _wait(
        self, key: KeyCells, window: int, now: float, rate: int, cluster: ClusterCounts | None
    ) -> float:
        """Seconds until the limit admits a request again (see ``sliding_wait``), from the counts as they
        stand (this request included if it was admitted). Only near exhaustion: it reads the counts twice
        more."""
        length = self.window
        current = both = None
        if cluster is not None:
            current = cluster.count(key.hash, window, 0.0, length, self.table.shards)
            both = cluster.count(key.hash, window, 1.0, length, self.table.shards)
        if current is None or both is None:  # node-local, or the shared store is down ("open")
            current = self.table.count(key.hash, key.where, window, 0.0)
            both = self.table.count(key.hash, key.where, window, 1.0)
        return sliding_wait(current, both - current, rate, now - window * length, length)

    def take_back(self, key: KeyCells, when: float, cluster: ClusterCounts | None) -> None:
        super().take_back(key, when, cluster)
        if cluster is not None:
            cluster.add(key.hash, int(when), -1)


class Gcra(Counter):
    """GCRA with per-worker shares (a static token lease): each of the n workers runs rate/n and burst/n
    on its own, one request at once plus its share of the burst, so n saturated workers admit about
    rate x T + burst + n together (n - 1 more than one GCRA would: the lease's price)."""

    def __init__(self, table: CounterTable, window: float, burst: int, limit_id: bytes = b"") -> None:
        super().__init__(table, window)
        self.burst = burst
        # Theoretical arrival times, this worker's share: kept by limit id across reloads (none: its own).
        self.tat: dict[int, float] = GCRA_TIMES.setdefault(limit_id, {}) if limit_id else {}

    def admit(
        self,
        key: KeyCells,
        value: str | bytes,
        now: float,
        cap: float,
        rate: int,
        shows: bool,
        cluster: ClusterCounts | None,
    ) -> float:
        shares = self.table.shards or 1
        interval = self.window / rate * shares
        tolerance = self.burst / shares * interval
        tat_map = self.tat
        old = tat_map.get(key.hash, 0.0)
        start = old if old > now else now  # the theoretical arrival time this request would take
        arrival = start + interval
        # Admitted when this request is no more than the tolerance early (GCRA's virtual scheduling):
        # with burst 0, one request per interval. (Measuring the arrival after it instead, as this did,
        # refused every request of a burst below the workers' count: the default burst 0 admitted none.)
        remaining = (tolerance - (start - now)) / interval * shares + 1
        self.reset = max(start - tolerance - now, 0.0)  # this request's wait if refused
        self.counted = cap > 0 and (remaining >= 1 or cap == UNCAPPED)
        if self.counted:
            if len(tat_map) >= TAT_MAX:
                tat_map.clear()
            tat_map[key.hash] = arrival
            self.reset = max(arrival - tolerance - now, 0.0)  # the next one's
            self.when = old
        return remaining

    def take_back(self, key: KeyCells, when: float, cluster: ClusterCounts | None) -> None:
        self.tat[key.hash] = when  # the arrival time before this request


class Quota(Counter):
    """Requests per UTC calendar day or month: the table counts this run, the store what came before."""

    def __init__(self, table: CounterTable, window: float, period: str, limit_id: bytes) -> None:
        super().__init__(table, window)
        self.period = period
        self.limit_id = limit_id

    def admit(
        self,
        key: KeyCells,
        value: str | bytes,
        now: float,
        cap: float,
        rate: int,
        shows: bool,
        cluster: ClusterCounts | None,
    ) -> float:
        hashed = key.hash
        period, self.reset = QUOTAS.period(self.period, now)
        if hashed not in QUOTAS.names:
            QUOTAS.name(hashed, self.limit_id, value)
        base = QUOTAS.base.get((hashed, period), 0)  # counted before this run
        counted = base + self.table.count(hashed, key.where, period, 0.0, cap - base)
        self.counted = counted + 1 <= cap
        if self.counted:
            QUOTAS.add(hashed, period)
            self.when = float(period)
        return rate - counted

    def take_back(self, key: KeyCells, when: float, cluster: ClusterCounts | None) -> None:
        super().take_back(key, when, cluster)
        QUOTAS.add(key.hash, int(when), -1)


class Concurrency(Counter):
    """Requests in flight for the key, summed over every worker; given back when each completes."""

    def __init__(self, table: CounterTable, window: float) -> None:
        super().__init__(table, window)
        self.holds = True
        self.when = float(IN_FLIGHT)
        self.reset = 1.0  # a request in flight ends when it ends: Retry-After 1 is a hint

    def admit(
        self,
        key: KeyCells,
        value: str | bytes,
        now: float,
        cap: float,
        rate: int,
        shows: bool,
        cluster: ClusterCounts | None,
    ) -> float:
        busy = self.table.count(key.hash, key.where, IN_FLIGHT, 0.0, cap)  # in flight, every shard
        self.counted = busy + 1 <= cap
        return rate - busy
