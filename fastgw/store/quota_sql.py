"""The quota counts' SQL, written once for both backends as usage_sql.py is (``mark``: ``?`` for SQLite,
``%s`` for psycopg).

One row per (key hash, period, run): ``run_id`` is a gateway run (its supervisor's start time), ``run``
what that run admitted, and each run writes only its own row, so nodes sharing one store never write the
same row. (Before schema step 7 a key and period had one row, which the last writer took over by folding
the previous writer's ``run`` into ``base``: another node's write then made a node's own run part of the
base it is sent, and its workers, adding their own run on top, counted it twice.) ``base`` is 0 in rows
written since; a row from before step 7 keeps there what earlier runs had counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fastgw.store.base import QuotaAdmission, QuotaBase, QuotaCount


def add_counts_sql(mark: str) -> str:
    """Add a run's admissions to its own row (created at zero)."""
    return (
        "INSERT INTO quotas (key_hash, period, limit_id, key, base, run_id, run, updated)"
        f" VALUES ({mark}, {mark}, {mark}, {mark}, 0, {mark}, {mark}, {mark})"
        " ON CONFLICT (key_hash, period, run_id) DO UPDATE SET run = quotas.run + excluded.run,"
        " updated = excluded.updated"
    )


def add_counts_rows(run_id: float, admissions: Sequence[QuotaAdmission], now: float) -> list[tuple[Any, ...]]:
    return [(a.key_hash, a.period, a.limit_id, a.key, run_id, a.count, now) for a in admissions]


def bases_sql(periods: int, mark: str) -> str:
    """Per key and period: every row's base and run, less the asking run's own ``run`` (its workers
    count that themselves); parameters: the run id, then the periods."""
    marks = ", ".join([mark] * periods)
    return (
        f"SELECT key_hash, period, SUM(CASE WHEN run_id = {mark} THEN base ELSE base + run END)"
        f" FROM quotas WHERE period IN ({marks}) GROUP BY key_hash, period"
    )


def bases_from(rows: Sequence[Sequence[Any]]) -> list[QuotaBase]:
    return [QuotaBase(int(h), int(p), int(n)) for h, p, n in rows]


# Grouped by key hash, which identifies a key (its names are a worker's copy, cut to 256 characters:
# two keys may share them); MAX picks the name a row has over "" (a report from a worker that had lost
# it). PostgreSQL sums BIGINTs into NUMERIC: int() takes either.
COUNTS_SQL: Final = (
    "SELECT MAX(limit_id), MAX(key), period, SUM(base + run), MAX(updated) FROM quotas"
    " GROUP BY key_hash, period ORDER BY MAX(updated) DESC, key_hash, period"
)


def counts_from(rows: Sequence[Sequence[Any]]) -> list[QuotaCount]:
    return [QuotaCount(str(r[0]), str(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows]


def forget_sql(mark: str) -> str:
    """Rows of the keys and periods that no run has written since the parameter (given twice).

    A key and period's rows go together: dropping one old run's row while another run still counts in
    the same period would lower the total, and the quota would admit again what it had refused. Not
    folding old runs into one row instead: that row would be one more that every node writes, and the
    rows it saves are few (one per run, and a run is a node's start) for at most a period (a month)."""
    return (
        f"DELETE FROM quotas WHERE updated < {mark} AND NOT EXISTS (SELECT 1 FROM quotas AS newer"
        " WHERE newer.key_hash = quotas.key_hash AND newer.period = quotas.period"
        f" AND newer.updated >= {mark}) RETURNING 1"
    )
