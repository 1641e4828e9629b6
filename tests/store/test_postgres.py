"""What only the PostgreSQL store does: migrations under an advisory lock (nodes starting together),
``fastgw store migrate`` against it, a clear one-line error when the database is unreachable (never the
password), the change log every write feeds (gapless numbers in commit order, what each touched), and
nodes counting the same quota keys at once."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from fastgw.store.base import ApiKey, Consumer, QuotaAdmission, QuotaBase, StoreError
from fastgw.store.pg_migrations import PG_MIGRATIONS
from fastgw.store.postgres import PostgresStore
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

MIGRATORS = 4  # nodes starting at the same moment on a new database


def versions(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def _migrate_together(dsn: str) -> list[object]:
    """MIGRATORS stores opened at once on ``dsn``; what each ended with."""
    start = threading.Barrier(MIGRATORS)
    results: list[object] = []

    def migrate() -> None:
        start.wait()
        try:
            PostgresStore(dsn, node=threading.current_thread().name).close()
            results.append("ok")
        except StoreError as exc:
            results.append(exc)

    threads = [threading.Thread(target=migrate, name=f"node-{i}") for i in range(MIGRATORS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_nodes_migrating_together_apply_each_step_once(postgres_server: PostgresServer) -> None:
    for _ in range(3):  # a race that the lock prevents would show on one of a few new databases
        dsn = postgres_server.create_database()
        assert _migrate_together(dsn) == ["ok"] * MIGRATORS
        assert versions(dsn) == [m.version for m in PG_MIGRATIONS]


def test_a_schema_newer_than_this_fastgw_is_refused(postgres_dsn: str) -> None:
    PostgresStore(postgres_dsn, node="a").close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    with pytest.raises(StoreError, match="schema version 99 is newer than this fastgw knows"):
        PostgresStore(postgres_dsn, node="a")


def test_an_unreachable_database_is_one_clear_line_without_the_password() -> None:
    port = free_port()  # nothing listens there
    dsn = f"postgresql://fastgw:hunter2-secret@127.0.0.1:{port}/gw?sslmode=disable"
    with pytest.raises(StoreError) as err:
        PostgresStore(dsn, node="a", connect_timeout=0.5)
    message = str(err.value)
    assert message.startswith(f"cannot connect to PostgreSQL at 127.0.0.1:{port}/gw: ")
    assert "\n" not in message and "hunter2" not in message
    assert "refused" in message.lower()


def _config(tmp_path: Path, dsn: str) -> Path:
    (tmp_path / "dsn").write_text(dsn + "\n")
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n\n[store]\nbackend = "postgres"\n'
        f'dsn = {{ file = "{tmp_path / "dsn"}" }}\nconnect_timeout = 2\n'
    )
    return config


def _migrate(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastgw", "store", "migrate", "--config", str(config), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_store_migrate_dry_run_prints_the_postgres_sql_and_changes_nothing(
    tmp_path: Path, postgres_dsn: str
) -> None:
    config = _config(tmp_path, postgres_dsn)
    out = _migrate(config, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert f"{len(PG_MIGRATIONS)} migrations would run" in out.stdout
    assert "-- migration 4: the cluster change log" in out.stdout
    assert "CREATE TABLE consumers (id TEXT PRIMARY KEY" in out.stdout and "BYTEA" in out.stdout
    assert "ADD CONSTRAINT quotas_pkey PRIMARY KEY (key_hash, period, run_id);" in out.stdout
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
    out = _migrate(config)
    assert out.returncode == 0 and f"{len(PG_MIGRATIONS)} migrations applied" in out.stdout, out.stderr
    assert versions(postgres_dsn) == [m.version for m in PG_MIGRATIONS]
    again = _migrate(config, "--dry-run")
    assert again.returncode == 0 and "up to date" in again.stdout
    assert "@" not in again.stdout  # where it is, never who connects or with what password


def test_store_migrate_says_in_one_line_when_the_database_is_unreachable(tmp_path: Path) -> None:
    config = _config(tmp_path, f"postgresql://fastgw:pw-secret@127.0.0.1:{free_port()}/gw")
    out = _migrate(config, "--dry-run")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "cannot connect to PostgreSQL at 127.0.0.1:" in out.stderr
    assert "pw-secret" not in out.stderr + out.stdout


def test_every_write_takes_the_next_change_number_and_logs_what_it_touched(postgres_dsn: str) -> None:
    a = PostgresStore(postgres_dsn, node="node-a")
    b = PostgresStore(postgres_dsn, node="node-b")
    try:
        assert a.last_change() == 0
        a.add_consumer(Consumer(id="c_1", name="acme", team="", roles=(), metadata={}, created=1.0))
        row = ApiKey(
            id="k_1",
            consumer_id="c_1",
            prefix="p",
            digest=b"\x09",
            pepper_id="p1",
            scopes=(),
            roles=(),
            routes=None,
            created=2.0,
        )
        b.add_key(row)
        b.update_key(replace(row, revoked=3.0))
        a.quota_bases(0.0, [1])
        a.add_quota_counts(0.0, [], 1.0)  # reads and quota counts are no identity change
        a.set_audit_anchor("log", 1, "ab")
        a.delete_consumer("c_1")
        changes = b.changes_since(0, 100)
        assert [(c.seq, c.node, c.kind, c.ref, c.digest) for c in changes] == [
            (1, "node-a", "consumer", "c_1", None),
            (2, "node-b", "key", "k_1", b"\x09"),
            (3, "node-b", "key", "k_1", b"\x09"),
            (4, "node-a", "consumer", "c_1", b"\x09"),  # the deleted keys' digests travel with it
        ]
        assert a.last_change() == b.last_change() == 4 and b.changes_since(4, 100) == []
        assert [c.seq for c in a.changes_since(2, 1)] == [3]
        a.forget_changes(before=changes[-1].at + 1)
        assert a.changes_since(0, 100) == [] and a.last_change() == 4  # numbers never go back
        # Each node has its own audit anchor for the same log path.
        assert b.audit_anchor("log") is None and a.audit_anchor("log") is not None
    finally:
        a.close()
        b.close()


def test_concurrent_writers_get_gapless_numbers_in_commit_order(postgres_dsn: str) -> None:
    stores = [PostgresStore(postgres_dsn, node=f"n{i}") for i in range(4)]
    try:

        def write(store: PostgresStore, n: int) -> None:
            for i in range(25):
                cid = f"c_{n}_{i}"
                store.add_consumer(Consumer(id=cid, name=cid, team="", roles=(), metadata={}, created=1.0))

        threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        seqs = [c.seq for c in stores[0].changes_since(0, 1000)]
        assert seqs == list(range(1, 101))
    finally:
        for s in stores:
            s.close()


def test_nodes_counting_the_same_quota_keys_at_once_each_get_a_base_without_their_own_run(
    postgres_dsn: str,
) -> None:
    """Two nodes' control processes (runs 1.0 and 2.0) write reports for the same keys and period at
    the same time: every admission is in the total once, and each node's base leaves out exactly its own
    run, whichever node wrote last."""
    nodes = {1.0: PostgresStore(postgres_dsn, node="node-a"), 2.0: PostgresStore(postgres_dsn, node="node-b")}
    reports = 40
    try:

        def report(run: float, store: PostgresStore) -> None:
            for i in range(reports):
                admitted = [QuotaAdmission(h, 3, "l", f"k{h}", int(run)) for h in (7, 8)]
                store.add_quota_counts(run, admitted, 10.0 + i, (f"quota-{run}", i + 1))

        threads = [threading.Thread(target=report, args=item) for item in nodes.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        mine = {run: reports * int(run) for run in nodes}  # each node's own run, per key
        for run, store in nodes.items():
            base = sum(mine.values()) - mine[run]
            assert set(store.quota_bases(run, [3])) == {QuotaBase(7, 3, base), QuotaBase(8, 3, base)}
        assert sorted((c.key, c.count) for c in nodes[1.0].quota_counts()) == [("k7", 120), ("k8", 120)]
    finally:
        for store in nodes.values():
            store.close()
