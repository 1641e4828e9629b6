"""The usage ledger's SQL, written once for both backends (``mark`` is the driver's placeholder: ``?`` for
SQLite, ``%s`` for psycopg): the upsert that adds a worker's deltas and the grouped query behind
``fastgw usage`` and ``GET /usage``.

A delta reaches the store once: the worker hands it to the control process and forgets it, the control
process adds it in one transaction (``ON CONFLICT ... DO UPDATE SET n = n + excluded.n``). A batch the
control process writes again (replayed from its spool after an outage or a crash, control/ledger.py)
is skipped by its number (``claim_batch``, in the same transaction), so it is never counted twice
(docs/llm-usage.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fastgw.store.base import UsageDelta, UsageQuery, UsageTotal
from fastgw.usage_fields import GROUP_KEYS

SUMS: Final = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_nanousd",
    "unpriced",
    "errors",
)
NANO: Final = 1e9  # costs are kept in 1e-9 USD
_DIMENSIONS: Final = ", ".join(GROUP_KEYS)
_COLUMNS: Final = f"{_DIMENSIONS}, {', '.join(SUMS)}, updated"


def upsert(mark: str) -> str:
    adds = ", ".join(f"{c} = llm_usage.{c} + excluded.{c}" for c in SUMS)
    values = ", ".join([mark] * (len(GROUP_KEYS) + len(SUMS) + 1))
    return (
        f"INSERT INTO llm_usage ({_COLUMNS}) VALUES ({values}) ON CONFLICT ({_DIMENSIONS})"
        f" DO UPDATE SET {adds}, updated = excluded.updated"
    )


def claim_batch(mark: str) -> str:
    """Record (writer, number, time) as the writer's highest batch applied; returns a row only when the
    number is above the one recorded, so a batch already applied is skipped (control/ledger.py)."""
    return (
        f"INSERT INTO ledger_batches (writer, seq, updated) VALUES ({mark}, {mark}, {mark})"
        " ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, updated = excluded.updated"
        " WHERE ledger_batches.seq < excluded.seq RETURNING seq"
    )


def _row_key(d: UsageDelta) -> tuple[str, ...]:
    return (d.day, d.consumer, d.key, d.team, d.model, d.provider, d.route)


def upsert_rows(deltas: Sequence[UsageDelta], now: float) -> list[tuple[Any, ...]]:
    return [
        (
            d.day,
            d.consumer,
            d.key,
            d.team,
            d.model,
            d.provider,
            d.route,
            d.requests,
            d.prompt_tokens,
            d.completion_tokens,
            d.cached_tokens,
            d.reasoning_tokens,
            d.cost_nanousd,
            d.unpriced,
            d.errors,
            now,
        )
        # In key order: two nodes upserting the same rows lock them in one order, never into a deadlock.
        for d in sorted(deltas, key=_row_key)
    ]


def select(query: UsageQuery, mark: str) -> tuple[str, list[Any]]:
    """The grouped sums the query asks for. Group names are checked against GROUP_KEYS (they become
    SQL); values only ever travel as parameters."""
    for name in query.group_by:
        if name not in GROUP_KEYS:
            raise ValueError(f"cannot group by {name!r}: one of {', '.join(GROUP_KEYS)}")
    where: list[str] = []
    params: list[Any] = []
    if query.since:
        where.append(f"day >= {mark}")
        params.append(query.since)
    if query.until:
        where.append(f"day <= {mark}")
        params.append(query.until)
    for name in ("consumer", "team", "model", "provider", "key", "route"):
        value = getattr(query, name)
        if value is not None:
            where.append(f"{name} = {mark}")
            params.append(value)
    groups = list(dict.fromkeys(query.group_by))
    picked = [*groups, *(f"SUM({c})" for c in SUMS)]
    sql = f"SELECT {', '.join(picked)} FROM llm_usage"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if groups:
        sql += f" GROUP BY {', '.join(groups)} ORDER BY SUM(cost_nanousd) DESC, {', '.join(groups)}"
    return sql, params


def totals(query: UsageQuery, rows: Sequence[Sequence[Any]]) -> list[UsageTotal]:
    groups = list(dict.fromkeys(query.group_by))
    out = []
    for row in rows:
        sums = row[len(groups) :]
        if sums[0] is None:  # no rows matched: SUM over nothing is NULL
            continue
        requests, prompt, completion, cached, reasoning, cost, unpriced, errors = sums
        out.append(
            UsageTotal(
                tuple((name, str(value)) for name, value in zip(groups, row, strict=False)),
                int(requests),
                int(prompt),
                int(completion),
                int(cached),
                int(reasoning),
                int(cost) / NANO,
                int(unpriced),
                int(errors),
            )
        )
    return out
