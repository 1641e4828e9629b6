"""The SQLite schema as numbered steps (fastgw/store/sqlite.py applies them; ``fastgw store migrate``
runs or shows them).

Rules: a released step never changes; a schema change is a new step at the end. Step 1 is the schema as
it stood before versioned migrations, with ``IF NOT EXISTS`` so that a database made by an older version
is adopted in place; step 2 is the first column added after that release. A PostgreSQL backend keeps its
own list with the same versions.
"""

from __future__ import annotations

from typing import Final

from fastgw.store.base import Migration

MIGRATIONS: Final = (
    Migration(
        1,
        "audit anchors, consumers, API keys, quota counts",
        (
            "CREATE TABLE IF NOT EXISTS audit_anchor (log TEXT PRIMARY KEY, seq INTEGER NOT NULL,"
            " mac TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS consumers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
            " team TEXT NOT NULL, roles TEXT NOT NULL, metadata TEXT NOT NULL, created REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS api_keys (id TEXT PRIMARY KEY,"
            " consumer_id TEXT NOT NULL REFERENCES consumers(id), prefix TEXT NOT NULL, digest BLOB NOT NULL"
            " UNIQUE, pepper_id TEXT NOT NULL, scopes TEXT NOT NULL, roles TEXT NOT NULL, routes TEXT,"
            " created REAL NOT NULL, expires REAL, revoked REAL, replaced_by TEXT)",
            # Quota counts: `base` before the current run of the gateway (`run_id`: its start time), `run`
            # since.
            "CREATE TABLE IF NOT EXISTS quotas (key_hash INTEGER NOT NULL, period INTEGER NOT NULL,"
            " limit_id TEXT NOT NULL, key TEXT NOT NULL, base INTEGER NOT NULL, run_id REAL NOT NULL,"
            " run INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (key_hash, period))",
        ),
    ),
    Migration(
        2,
        "consumers.disabled: when a consumer was disabled (NULL: enabled)",
        ("ALTER TABLE consumers ADD COLUMN disabled REAL",),
        adds_column=("consumers", "disabled"),
    ),
    Migration(
        3,
        "provider_credentials: LLM provider keys, AES-256-GCM encrypted under a master key id",
        (
            "CREATE TABLE provider_credentials (provider TEXT PRIMARY KEY, key_id TEXT NOT NULL,"
            " nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, prefix TEXT NOT NULL, created REAL NOT NULL,"
            " updated REAL NOT NULL)",
        ),
    ),
    # 4 is PostgreSQL's change log (pg_migrations.py): SQLite stores have no other node to tell.
    Migration(
        5,
        "llm_usage: the usage ledger, LLM requests, tokens and cost (1e-9 USD) per day, consumer, key,"
        " team, model, provider and route (sinks/ledger.py)",
        (
            "CREATE TABLE llm_usage (day TEXT NOT NULL, consumer TEXT NOT NULL, key TEXT NOT NULL,"
            " team TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, route TEXT NOT NULL,"
            " requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
            " cached_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,"
            " cost_nanousd INTEGER NOT NULL, unpriced INTEGER NOT NULL,"
            " errors INTEGER NOT NULL, updated REAL NOT NULL,"
            " PRIMARY KEY (day, consumer, key, team, model, provider, route))",
            "CREATE INDEX llm_usage_day ON llm_usage (day)",
        ),
    ),
    Migration(
        6,
        "ledger_batches: each control process run's highest usage batch applied, so a batch replayed from"
        " the spool after an outage or a crash is not counted twice (control/ledger.py)",
        (
            "CREATE TABLE ledger_batches (writer TEXT PRIMARY KEY, seq INTEGER NOT NULL,"
            " updated REAL NOT NULL)",
        ),
    ),
    Migration(
        7,
        "quotas: one row per key, period and run (run_id), so nodes sharing a store never count a run"
        " twice (store/quota_sql.py); each row kept as it was",
        (
            # SQLite cannot change a primary key in place: a new table, the rows, then the new one's name.
            "CREATE TABLE quotas_by_run (key_hash INTEGER NOT NULL, period INTEGER NOT NULL,"
            " limit_id TEXT NOT NULL, key TEXT NOT NULL, base INTEGER NOT NULL, run_id REAL NOT NULL,"
            " run INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (key_hash, period, run_id))",
            "INSERT INTO quotas_by_run (key_hash, period, limit_id, key, base, run_id, run, updated)"
            " SELECT key_hash, period, limit_id, key, base, run_id, run, updated FROM quotas",
            "DROP TABLE quotas",
            "ALTER TABLE quotas_by_run RENAME TO quotas",
        ),
    ),
)
