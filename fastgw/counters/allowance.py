"""Allowances: limits on an *amount* per period (tokens, requests, micro-USD) rather than one request
each, reserved before the work and reconciled after it. The LLM budgets (ai/budgets.py) count with them.

``reserve`` admits an amount when what is used, plus it, stays within ``cap``; it counts the amount at
once in this worker's own shard (the table's single-writer rule: no lock) and leaves on the instance what
the caller reads right after (``counted``, ``when``: the window it counted in, ``used``: what was used
before, ``reset``: seconds until the amount would fit if nothing else were counted). ``settle`` corrects
a reservation by the difference between what was used and what was reserved, in the window it was
reserved in, without a cap: an answer longer than its estimate is counted in full.

Periods: ``minute`` is the sliding-window estimate (counters/algorithms.py) over 60 s; ``day`` and
``month`` are UTC calendar periods. Node-local, a calendar period counts in the table under the quota
codes of counters/quota.py, and the quota book carries it to the store, so spend survives a restart
(``/quotas`` lists it). In cluster mode every period counts through ``ClusterCounts`` (Redis), keyed by the
day index (length one day) or the month index (length ``MONTH_LENGTH``).

Error bound, one node: a decision reads every shard, then counts in its own; between the two, up to
``workers - 1`` other workers may decide on the same counts, so a limit can be overrun by at most
``workers - 1`` reservations (each at most its own amount), never more. Across nodes, the cluster bound of
counters/cluster.py applies with amounts instead of requests: what the other participants reserve within
one flush interval plus a round trip.
"""

from __future__ import annotations

from typing import Final

from fastgw.counters.algorithms import sliding_wait
from fastgw.counters.cluster import ClusterCounts
from fastgw.counters.quota import DAY_SECONDS, QUOTAS
from fastgw.counters.table import CounterTable, KeyCells

MINUTE: Final = "minute"
DAY: Final = "day"
MONTH: Final = "month"
PERIODS: Final = (MINUTE, DAY, MONTH)
MINUTE_SECONDS: Final = 60.0
# A month's window length in cluster mode: windows are indexed by the calendar month, and the cluster
# forgets a window once (index + 2) x length lies in the past and lets Redis expire it after 2 x length.
# 32 days exceeds every month, so the current and the previous month stay watched, and kept, however
# far the months' real lengths (30.44 days on average) drift from the index.
MONTH_LENGTH: Final = 32 * DAY_SECONDS


class Allowance:
    """One period's amount limit of one budget, in one worker."""

    def __init__(self, table: CounterTable, period: str, limit_id: bytes) -> None:
        self.table = table
        self.period = period
        self.limit_id = limit_id  # names the key in the store (quotas) for calendar periods
        self.counted = False
        self.when = 0
        self.used = 0.0
        self.reset = 0.0

    def reserve(
        self,
        key: KeyCells,
        value: str,
        amount: int,
        now: float,
        cap: int,
        cluster: ClusterCounts | None,
    ) -> bool:
        """Count ``amount`` when ``used + amount <= cap``; returns False when the shared store is down
        and the cluster's failure mode is "closed" (nothing counted)."""
        table = self.table
        hashed = key.hash
        period = self.period
        weight = 0.0
        if period == MINUTE:
            position = now / MINUTE_SECONDS
            window = int(position)
            elapsed = (position - window) * MINUTE_SECONDS
            weight = 1.0 - elapsed / MINUTE_SECONDS
            length = MINUTE_SECONDS
        elif cluster is not None:
            window, self.reset = QUOTAS.period(period, now)
            window, length = self._cluster_window(window, now)
            elapsed = 0.0
        else:
            window, self.reset = QUOTAS.period(period, now)
            length = elapsed = 0.0
        used: float
        if cluster is not None:
            shared = cluster.count(hashed, window, weight, length, table.shards)
            if shared is None:
                if cluster.failure == "closed":
                    self.counted = False
                    return False
                shared = table.count(hashed, key.where, window, weight)
            used = shared
        elif period == MINUTE:
            used = table.count(hashed, key.where, window, weight)
        else:
            if hashed not in QUOTAS.names:
                QUOTAS.name(hashed, self.limit_id, value)
            used = QUOTAS.base.get((hashed, window), 0) + table.count(hashed, key.where, window, 0.0)
        self.used = used
        self.when = window
        self.counted = used + amount <= cap
        if self.counted:
            self._add(key, window, amount, cluster)
        if period == MINUTE:
            if self.counted:
                self.reset = MINUTE_SECONDS - elapsed
            else:  # when would the estimate leave room for this amount? (rate - 1 = cap - amount)
                current = table.count(hashed, key.where, window, 0.0)
                before = table.count(hashed, key.where, window, 1.0) - current
                if cluster is not None:
                    current = cluster.count(hashed, window, 0.0, length) or current
                    both = cluster.count(hashed, window, 1.0, length)
                    before = before if both is None else both - current
                room = cap - amount + 1
                self.reset = (
                    sliding_wait(current, before, room, elapsed, MINUTE_SECONDS)
                    if room >= 1
                    else MINUTE_SECONDS  # more than the whole limit: never; a window is the honest hint
                )
        return True

    def settle(self, key: KeyCells, when: int, delta: int, cluster: ClusterCounts | None) -> None:
        """Correct a reservation made in window ``when`` by ``delta`` (used minus reserved), uncapped."""
        if not delta:
            return
        self.table.adjust(key.hash, key.where, when, delta)
        if cluster is not None:
            cluster.add(key.hash, when, delta)
        elif self.period != MINUTE:
            QUOTAS.add(key.hash, when, delta)

    def _add(self, key: KeyCells, window: int, amount: int, cluster: ClusterCounts | None) -> None:
        self.table.add(key.hash, key.where, window, amount)
        if cluster is not None:
            cluster.add(key.hash, window, amount)
        elif self.period != MINUTE:
            QUOTAS.add(key.hash, window, amount)

    def _cluster_window(self, code: int, now: float) -> tuple[int, float]:
        """A calendar period's window index and length for the cluster (see ``MONTH_LENGTH``)."""
        if self.period == DAY:
            return int(now // DAY_SECONDS), float(DAY_SECONDS)
        return -(code + 3) // 2, MONTH_LENGTH
