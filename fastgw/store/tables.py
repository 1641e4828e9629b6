"""The store's tables by name, for the code that handles whole tables: ``fastgw store copy`` moves each
of them from SQLite to PostgreSQL, in this order (a key's consumer before the key); retention
(control/retention.py) trims the ``RETAINED_TABLES`` by age; erasure (control/privacy.py) rewrites a
consumer's name or id to a pseudonym in the ``CONSUMER_USAGE`` columns and exports their rows.

A feature that adds a table to both backends' migrations adds its row here (and, if its rows age out or
name a consumer, to the other two lists) (its columns as both
backends name them, and its key: what identifies a row, so a repeated copy skips rows already there).
PostgreSQL's own tables (the change log, the migration record) are not copied: a new database makes
them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fastgw.store.rows import CONSUMER_COLUMNS, CREDENTIAL_COLUMNS, KEY_COLUMNS


@dataclass(frozen=True, slots=True)
class StoreTable:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # the primary key's columns


def _columns(listed: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in listed.split(","))


AUDIT_ANCHORS: Final = StoreTable("audit_anchor", ("log", "seq", "mac"), ("log",))

TABLES: Final[tuple[StoreTable, ...]] = (
    StoreTable("consumers", _columns(CONSUMER_COLUMNS), ("id",)),
    StoreTable("api_keys", _columns(KEY_COLUMNS), ("id",)),
    StoreTable("provider_credentials", _columns(CREDENTIAL_COLUMNS), ("provider",)),
    StoreTable(
        "quotas",
        ("key_hash", "period", "limit_id", "key", "base", "run_id", "run", "updated"),
        ("key_hash", "period", "run_id"),  # a row per run (schema step 7)
    ),
    AUDIT_ANCHORS,
    StoreTable(
        "llm_usage",
        _columns(
            "day, consumer, key, team, model, provider, route, requests, prompt_tokens, completion_tokens,"
            " cached_tokens, reasoning_tokens, cost_nanousd, unpriced, errors, updated"
        ),
        ("day", "consumer", "key", "team", "model", "provider", "route"),
    ),
    # Which ledger batches were applied (control/ledger.py): copied, so a spool replayed after the move
    # to PostgreSQL does not add again what SQLite had already taken.
    StoreTable("ledger_batches", ("writer", "seq", "updated"), ("writer",)),
)

QUOTAS: Final = TABLES[3]
LEDGER: Final = TABLES[5]

# Retention kinds ([retention] days, config/retention_spec.py) kept in a store table: (table, the column
# holding each row's unix time). A table a backend lacks (the change log on SQLite) is skipped. Not
# "quotas": a key and period's rows (one per run) age together, Store.forget_quotas (control/retention.py).
RETAINED_TABLES: Final = {
    "changes": ("changes", "at"),
    "ledger": ("llm_usage", "updated"),  # a day's row is last written on that day (sinks/ledger.py)
}

# Usage rows that name a consumer (by id or name) in one column: an erased consumer's become a
# pseudonym's, so totals still add up; an export lists them.
CONSUMER_USAGE: Final[tuple[tuple[StoreTable, str], ...]] = ((QUOTAS, "key"), (LEDGER, "consumer"))
