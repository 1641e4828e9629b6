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
day index (length one day) or the month index (length ``MONTH_LENGTH``, the average month).

Error bound, one node: a decision reads every shard, then counts in its own; between the two, up to
``workers - 1`` other workers may decide on the same counts, so a limit can be overrun by at most
``workers - 1`` reservations (each at most its own amount), never more. Across nodes, the cluster bound of
counters/cluster.py applies with amounts instead of requests: what the other participants reserve within
one flush interval plus a round trip.
"""

from __future__ import annotations

from typing import Final

from fastgw.counters.algorithms import CLOSED, cluster_count, sliding_wait
from fastgw.counters.cluster import ClusterCounts
from fastgw.counters.quota import DAY_SECONDS, QUOTAS, period_bounds
from fastgw.counters.table import CounterTable, KeyCells

MINUTE: Final = "minute"
DAY: Final = "day"
MONTH: Final = "month"
PERIODS: Final = (MINUTE, DAY, MONTH)
MINUTE_SECONDS: Final = 60.0
# A month's window length in cluster mode: windows are indexed by the calendar month (months since 1970),
# and both the cluster and the node's table read index x length as the window's start in unix seconds:
# the cluster forgets a window once (index + 2) x length lies in the past (Redis expires it 2 x length
# after its last write), and the table gives a cell to another key by the same sum. The Gregorian
# average month makes that product the month's real start within two days. (32 days, as it was, put the
# product years ahead: month windows were never forgotten, each read again on every flush, and a month
# key took over the live cell of a second-, hour- or day-window key.)
MONTH_LENGTH: Final = 365.2425 / 12 * DAY_SECONDS


def minute_window(now: float) -> tuple[int, float]:
    """The minute window ``now`` falls in (minutes since the epoch) and the seconds elapsed in it."""
    position = now / MINUTE_SECONDS
    window = int(position)
    return window, (position - window) * MINUTE_SECONDS


class AmountKey(KeyCells):
    """A key of an allowance: its cells, and (a calendar period counted on this node) what the quota book
    holds for it in the current period: its count from before this run and its cell of counts to send,
    kept while the book's ``epoch`` and the period stay the same (no dict lookup per request)."""

    __slots__ = ("base", "code", "epoch", "pending")

    def __init__(self, key_hash: int, where: list[int]) -> None:
        super().__init__(key_hash, where)
        self.epoch = -1  # nothing kept yet
        self.code = 0
        self.base = 0
        self.pending: list[int] = []


class Allowance:
    """One period's amount limit of one budget, in one worker."""

    def __init__(self, table: CounterTable, period: str, limit_id: bytes) -> None:
        self.table = table
        self.period = period
        self.minute = period == MINUTE
        self.limit_id = limit_id  # names the key in the store (quotas) for calendar periods
        self.counted = False
        self.when = 0
        self.used = 0.0
        self.reset = 0.0
        # The calendar period (day, month) the last request fell in: its code and bounds (``_calendar``).
        self.period_code = 0
        self.period_start = self.period_end = 0.0

    def reserve(
        self,
        key: AmountKey,
        value: str,
        amount: int,
        now: float,
        cap: int,
        cluster: ClusterCounts | None,
    ) -> bool:
        """Count ``amount`` when ``used + amount <= cap``; returns False when the shared store is down
        and the cluster's failure mode is "closed" (nothing counted)."""
        if cluster is not None:
            return self._reserve_shared(key, value, amount, now, cap, cluster)
        table = self.table
        used: float
        if self.minute:
            window, elapsed = minute_window(now)
            used = table.sliding(key, window, 1.0 - elapsed / MINUTE_SECONDS, cap, amount, MINUTE_SECONDS)
            self.used = used
            self.when = window
            self.counted = used + amount <= cap
            if self.counted:
                self.reset = MINUTE_SECONDS - elapsed
            else:
                self.reset = self._minute_wait(key, window, elapsed, amount, cap, None, MINUTE_SECONDS)
            return True
        code = self._calendar(now)
        if key.epoch != QUOTAS.epoch or key.code != code:
            self._keep_quota(key, code, value)
        base = key.base
        used = base + table.sliding(key, code, 0.0, cap - base, amount)
        self.used = used
        self.when = code
        self.counted = used + amount <= cap
        if self.counted:
            key.pending[0] += amount
        return True

    def _reserve_shared(
        self, key: AmountKey, value: str, amount: int, now: float, cap: int, cluster: ClusterCounts
    ) -> bool:
        """``reserve`` in cluster mode: every period counts through the cluster's counts (Redis)."""
        table = self.table
        hashed = key.hash
        weight = 0.0
        if self.minute:
            window, elapsed = minute_window(now)
            weight = 1.0 - elapsed / MINUTE_SECONDS
            length = MINUTE_SECONDS
        else:
            window, length = self._cluster_window(self._calendar(now), now)
            elapsed = 0.0
        shared = cluster_count(table, key, window, weight, length, cluster)
        if shared == CLOSED:
            self.counted = False
            return False
        self.used = shared
        self.when = window
        self.counted = shared + amount <= cap
        if self.counted:  # the cluster decides: count here and in the batch for Redis
            table.add(hashed, key.where, window, amount, length)
            cluster.add(hashed, window, amount)
        if self.minute:
            self.reset = (
                MINUTE_SECONDS - elapsed
                if self.counted
                else self._minute_wait(key, window, elapsed, amount, cap, cluster, length)
            )
        return True

    def _calendar(self, now: float) -> int:
        """The code of the calendar period ``now`` falls in (``reset``: the seconds left in it), kept
        while requests fall inside it rather than worked out from the time on every request."""
        if not self.period_start <= now < self.period_end:
            code = QUOTAS.period(self.period, now)[0]
            _kind, self.period_start, self.period_end = period_bounds(code)
            self.period_code = code
        self.reset = self.period_end - now
        return self.period_code

    def _minute_wait(
        self,
        key: KeyCells,
        window: int,
        elapsed: float,
        amount: int,
        cap: int,
        cluster: ClusterCounts | None,
        length: float,
    ) -> float:
        """A refusal: when would the estimate leave room for this amount? (rate - 1 = cap - amount)"""
        table = self.table
        hashed = key.hash
        current = table.count(hashed, key.where, window, 0.0)
        before = table.count(hashed, key.where, window, 1.0) - current
        if cluster is not None:
            current = cluster.count(hashed, window, 0.0, length) or current
            both = cluster.count(hashed, window, 1.0, length)
            before = before if both is None else both - current
        room = cap - amount + 1
        if room < 1:  # more than the whole limit: never; a window is the honest hint
            return MINUTE_SECONDS
        return sliding_wait(current, before, room, elapsed, MINUTE_SECONDS)

    def _keep_quota(self, key: AmountKey, code: int, value: str) -> None:
        """Look up, once per period and quota-book epoch, the key's base and its cell of counts to send."""
        hashed = key.hash
        if hashed not in QUOTAS.names:
            QUOTAS.name(hashed, self.limit_id, value)
        key.base = QUOTAS.base.get((hashed, code), 0)
        key.pending = QUOTAS.cell(hashed, code)
        key.code = code
        key.epoch = QUOTAS.epoch

    def settle(self, key: AmountKey, when: int, delta: int, cluster: ClusterCounts | None) -> None:
        """Correct a reservation made in window ``when`` by ``delta`` (used minus reserved), uncapped."""
        if not delta:
            return
        self.table.adjust_key(key, when, delta)
        if cluster is not None:
            cluster.add(key.hash, when, delta)
        elif not self.minute:
            if key.epoch == QUOTAS.epoch and key.code == when:
                key.pending[0] += delta
            else:
                QUOTAS.add(key.hash, when, delta)

    def _cluster_window(self, code: int, now: float) -> tuple[int, float]:
        """A calendar period's window index and length for the cluster (see ``MONTH_LENGTH``)."""
        if self.period == DAY:
            return int(now // DAY_SECONDS), float(DAY_SECONDS)
        return -(code + 3) // 2, MONTH_LENGTH
