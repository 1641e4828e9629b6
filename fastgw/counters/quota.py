"""Quotas: day and month limits (UTC calendar periods) whose counts outlive the gateway.

A quota is a limit with ``quota = "day"`` or ``"month"``: ``rate`` requests per calendar period. Its
counts live in two places. The node-wide shared-memory table counts this run of the gateway (the
supervisor's lifetime: it survives worker and control-process restarts), under a window code that
cannot collide with sliding windows (negative; days even, months odd). The store keeps the totals:
every ``[rate_limits] quota_flush`` seconds each worker sends the control process (the store's only
writer) what it admitted since, and the control process adds it in one transaction, to this run's own
row (store/quota_sql.py). When a worker connects, the control process sends it each key's count outside
this run (earlier runs; in cluster mode, other nodes' too); a decision is that base plus the table's
count for this run.

Crash bound: counts reach the store at most one flush interval late, so a crash of the whole node loses at
most one interval of admissions per worker (a worker that dies alone loses nothing: this run's counts
stay in shared memory). Between a worker's connects, quotas are per node, also in cluster mode.
"""

from __future__ import annotations

import calendar
import time
from typing import Final

DAY: Final = "day"
MONTH: Final = "month"
DAY_SECONDS: Final = 86400
NAME_TEXT_MAX: Final = 256  # characters of a key value kept to name it (the store and /quotas show it)


def day_code(day: int) -> int:
    return -(2 + 2 * day)


def month_code(month: int) -> int:
    return -(3 + 2 * month)


def period_bounds(code: int) -> tuple[str, float, float]:
    """The inverse of day_code/month_code: ("day" | "month", start, end) in unix seconds (UTC)."""
    if code % 2 == 0:
        day = (-code - 2) // 2
        return DAY, float(day * DAY_SECONDS), float((day + 1) * DAY_SECONDS)
    month = (-code - 3) // 2
    year, index = 1970 + month // 12, month % 12
    start = calendar.timegm((year, index + 1, 1, 0, 0, 0))
    end = calendar.timegm((year + 1, 1, 1, 0, 0, 0) if index == 11 else (year, index + 2, 1, 0, 0, 0))
    return MONTH, float(start), float(end)


class QuotaBook:
    """This worker's quota bases (from the store) and admissions not yet sent to the control process."""

    def __init__(self) -> None:
        self.base: dict[tuple[int, int], int] = {}  # (key hash, period code) -> count before this run
        # (key hash, period code) -> [admissions to send]: a cell a caller may keep (``cell``) and count
        # in while ``epoch`` stays the same, rather than look the pair up on every request.
        self.pending: dict[tuple[int, int], list[int]] = {}
        self.epoch = 0  # moves whenever ``base`` or ``pending`` is replaced: kept cells are stale then
        self.names: dict[int, tuple[str, str]] = {}  # key hash -> (limit id, key value), for the store
        self.due = 0.0  # monotonic time of the next send
        self._month: tuple[int, int, float] = (-1, 0, 0.0)  # day -> (month index, month end)

    def period(self, kind: str, now: float) -> tuple[int, float]:
        """The period code for ``now`` and the seconds left in the period."""
        day = int(now // DAY_SECONDS)
        if kind == DAY:
            return day_code(day), (day + 1) * DAY_SECONDS - now
        cached_day, month, end = self._month
        if cached_day != day:
            t = time.gmtime(now)
            month = (t.tm_year - 1970) * 12 + t.tm_mon - 1
            year, next_month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
            end = float(calendar.timegm((year, next_month, 1, 0, 0, 0)))
            self._month = (day, month, end)
        return month_code(month), end - now

    def current_periods(self, now: float) -> list[int]:
        return [self.period(DAY, now)[0], self.period(MONTH, now)[0]]

    def name(self, key_hash: int, limit_id: bytes, value: str | bytes) -> None:
        """Remember what a key hash stands for, so the store says which limit and key it counts."""
        if len(self.names) >= 65536:
            self.names.clear()
            self.epoch += 1  # keys kept by allowances name themselves again before they count
        # The text only names the key (the store counts by key_hash): a client's 16 KiB header value is
        # kept, and stored, as its first NAME_TEXT_MAX bytes, so this dict holds at most ~20 MiB.
        text = (
            value[:NAME_TEXT_MAX]
            if isinstance(value, str)
            else value[:NAME_TEXT_MAX].decode("utf-8", "replace")
        )
        self.names[key_hash] = (limit_id.decode(), text)

    def cell(self, key_hash: int, code: int) -> list[int]:
        """The pending count of (key, period), to add to in place while ``epoch`` is unchanged."""
        key = (key_hash, code)
        cell = self.pending.get(key)
        if cell is None:
            cell = self.pending[key] = [0]
        return cell

    def add(self, key_hash: int, code: int, count: int = 1) -> None:
        self.cell(key_hash, code)[0] += count

    def take(self) -> list[list[object]]:
        """The admissions to send: ``[key hash, period, limit id, key, count]`` each."""
        pending, self.pending = self.pending, {}
        self.epoch += 1
        out: list[list[object]] = []
        for (key_hash, code), (count,) in pending.items():
            if count:
                limit_id, value = self.names.get(key_hash, ("", ""))
                out.append([key_hash, code, limit_id, value, count])
        return out

    def apply_bases(self, entries: list[list[int]]) -> None:
        self.base = {(int(h), int(p)): int(n) for h, p, n in entries}
        self.epoch += 1


# The worker's quota book. Process-global on purpose: a per-worker singleton fed by the control link
# (the bases from the store, process/control_link.py) and flushed to it, whose counts must outlive
# reloads; the control process keeps its own for the periods it reports. Not injected through the compile
# context: no compile creates or replaces it.
QUOTAS: Final = QuotaBook()
