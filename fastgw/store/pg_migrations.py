"""The PostgreSQL schema as numbered steps, with the same versions as SQLite's (store/migrations.py) for
the same tables, so "schema version N" means the same thing on both; fastgw/store/postgres.py applies
them under an advisory lock, and ``fastgw store migrate --dry-run`` prints them.

The types are PostgreSQL's own: DOUBLE PRECISION for unix times (SQLite's REAL), BYTEA for digests and
ciphertexts, BIGINT for 64-bit hashes and counts; lists and objects stay JSON text, as in SQLite, so rows
move between the backends unchanged. Step 4, the cluster change log, has no SQLite counterpart: one
SQLite file has one writer, and nobody to tell.

Rules: a released step never changes; a schema change is a new step at the end of both lists.
"""

from __future__ import annotations

from typing import Final

from fastgw.store.base import Migration

CHANGE_CHANNEL: Final = "fastgw_changes"  # the LISTEN/NOTIFY channel; the payload is the change number

PG_MIGRATIONS: Final = (
    Migration(
        1,
        "audit anchors, consumers, API keys, quota counts",
        (
            "CREATE TABLE audit_anchor (log TEXT PRIMARY KEY, seq BIGINT NOT NULL, mac TEXT NOT NULL)",
            "CREATE TABLE consumers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, team TEXT NOT NULL,"
            " roles TEXT NOT NULL, metadata TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE api_keys (id TEXT PRIMARY KEY, consumer_id TEXT NOT NULL REFERENCES consumers(id),"
            " prefix TEXT NOT NULL, digest BYTEA NOT NULL UNIQUE, pepper_id TEXT NOT NULL,"
            " scopes TEXT NOT NULL, roles TEXT NOT NULL, routes TEXT, created DOUBLE PRECISION NOT NULL,"
            " expires DOUBLE PRECISION, revoked DOUBLE PRECISION, replaced_by TEXT)",
            "CREATE INDEX api_keys_consumer ON api_keys (consumer_id)",
            "CREATE TABLE quotas (key_hash BIGINT NOT NULL, period BIGINT NOT NULL, limit_id TEXT NOT NULL,"
            " key TEXT NOT NULL, base BIGINT NOT NULL, run_id DOUBLE PRECISION NOT NULL, run BIGINT NOT NULL,"
            " updated DOUBLE PRECISION NOT NULL, PRIMARY KEY (key_hash, period))",
        ),
    ),
    Migration(
        2,
        "consumers.disabled: when a consumer was disabled (NULL: enabled)",
        ("ALTER TABLE consumers ADD COLUMN disabled DOUBLE PRECISION",),
    ),
    Migration(
        3,
        "provider_credentials: LLM provider keys, AES-256-GCM encrypted under a master key id",
        (
            "CREATE TABLE provider_credentials (provider TEXT PRIMARY KEY, key_id TEXT NOT NULL,"
            " nonce BYTEA NOT NULL, ciphertext BYTEA NOT NULL, prefix TEXT NOT NULL,"
            " created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL)",
        ),
    ),
    Migration(
        4,
        "the cluster change log: a gapless change number per write, and what each write touched",
        (
            # One row: its update takes a row lock held to the writer's commit, so change numbers are
            # handed out in commit order with no gaps (a sequence would do neither).
            "CREATE TABLE change_counter (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),"
            " seq BIGINT NOT NULL)",
            "INSERT INTO change_counter (one, seq) VALUES (TRUE, 0)",
            "CREATE TABLE changes (seq BIGINT NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL,"
            " ref TEXT NOT NULL, digest BYTEA, at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX changes_seq ON changes (seq)",
        ),
    ),
    Migration(
        5,
        "llm_usage: the usage ledger, LLM requests, tokens and cost (1e-9 USD) per day, consumer, key,"
        " team, model, provider and route (sinks/ledger.py)",
        (
            "CREATE TABLE llm_usage (day TEXT NOT NULL, consumer TEXT NOT NULL, key TEXT NOT NULL,"
            " team TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, route TEXT NOT NULL,"
            " requests BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,"
            " cached_tokens BIGINT NOT NULL, reasoning_tokens BIGINT NOT NULL,"
            " cost_nanousd BIGINT NOT NULL, unpriced BIGINT NOT NULL,"
            " errors BIGINT NOT NULL, updated DOUBLE PRECISION NOT NULL,"
            " PRIMARY KEY (day, consumer, key, team, model, provider, route))",
            "CREATE INDEX llm_usage_day ON llm_usage (day)",
        ),
    ),
    Migration(
        6,
        "ledger_batches: each control process run's highest usage batch applied, so a batch replayed from"
        " the spool after an outage or a crash is not counted twice (control/ledger.py)",
        (
            "CREATE TABLE ledger_batches (writer TEXT PRIMARY KEY, seq BIGINT NOT NULL,"
            " updated DOUBLE PRECISION NOT NULL)",
        ),
    ),
    Migration(
        7,
        "quotas: one row per key, period and run (run_id), so nodes sharing a store never count a run"
        " twice (store/quota_sql.py); each row kept as it was",
        (
            # quotas_pkey: the name PostgreSQL gave step 1's primary key, kept for the new one.
            "ALTER TABLE quotas DROP CONSTRAINT quotas_pkey",
            "ALTER TABLE quotas ADD CONSTRAINT quotas_pkey PRIMARY KEY (key_hash, period, run_id)",
        ),
    ),
)
