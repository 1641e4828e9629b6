"""``fastgw store copy``: a single node's SQLite store moved into PostgreSQL, every table, verified by
counts; a dry run writes nothing, a non-empty target is refused unless --force, a second copy adds
nothing, and no secret (the DSN's password, a key digest, a ciphertext) is ever printed."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from fastgw.store import node_name
from fastgw.store.base import ApiKey, Consumer, ProviderCredential, QuotaAdmission, UsageDelta, UsageQuery
from fastgw.store.postgres import PostgresStore
from fastgw.store.sqlite import SQLiteStore
from fastgw.store.tables import TABLES
from tests.support.cli import fastgw

PASSWORD = "hunter2-not-printed"
DIGEST = bytes(range(32))
CIPHERTEXT = b"\xa5" * 40


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A node's store with a row in every table."""
    path = tmp_path / "state" / "fastgw.db"
    store = SQLiteStore(str(path))
    store.add_consumer(
        Consumer(id="c_1", name="acme", team="t", roles=("r",), metadata={"m": 1}, created=1.0)
    )
    store.add_consumer(Consumer(id="c_2", name="beta", team="", roles=(), metadata={}, created=2.0))
    key = ApiKey(
        id="k_1",
        consumer_id="c_1",
        prefix="fgw_abcd",
        digest=DIGEST,
        pepper_id="p1",
        scopes=("read",),
        roles=(),
        routes=("api",),
        created=3.0,
        expires=9e9,
    )
    store.add_key(key)
    store.put_provider_credential(
        ProviderCredential(
            provider="openai",
            key_id="m1",
            nonce=b"n" * 12,
            ciphertext=CIPHERTEXT,
            prefix="sk-...",
            created=4.0,
            updated=5.0,
        )
    )
    store.add_quota_counts(7.0, [QuotaAdmission(-5, 3, "daily", "acme", 11)], 8.0)
    store.add_quota_counts(8.5, [QuotaAdmission(-5, 3, "daily", "acme", 4)], 9.0)  # a later run: its own row
    store.set_audit_anchor("/var/log/fastgw/audit.log", 12, "ab" * 32)
    store.add_usage(
        [UsageDelta("2026-12-01", "acme", "k_1", "", "m", "p", "llm", 2, 20, 7, 0, 0, 900, 0, 0)], 9.0
    )
    store.close()
    return path


def copy(path: Path, dsn: str, *extra: str) -> tuple[int, str]:
    done = fastgw(
        "store",
        "copy",
        "--from",
        f"sqlite:{path}",
        "--to",
        "postgres:env:FGW_DSN",
        *extra,
        env={"FGW_DSN": dsn},
    )
    out = done.stdout + done.stderr
    for secret in (PASSWORD, DIGEST.hex(), CIPHERTEXT.hex()):
        assert secret not in out
    return done.returncode, out


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t.name: conn.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0] for t in TABLES}  # type: ignore[index]


def with_password(dsn: str) -> str:
    return dsn.replace("fastgw@", f"fastgw:{PASSWORD}@")  # trust authentication accepts and ignores it


def test_copy_moves_every_table_and_verifies_it(sqlite_path: Path, postgres_dsn: str) -> None:
    dsn = with_password(postgres_dsn)
    rc, out = copy(sqlite_path, dsn, "--dry-run")
    assert rc == 0, out
    assert "dry run: nothing was written" in out
    assert "consumers" in out and "api_keys" in out
    with psycopg.connect(dsn) as conn:  # not even migrated
        assert conn.execute("SELECT to_regclass('consumers')").fetchone() == (None,)

    rc, out = copy(sqlite_path, dsn)
    assert rc == 0, out
    assert "verified: every row of the source is in the target" in out
    assert ["quotas", "2", "2", "2", "ok"] in [line.split() for line in out.splitlines()]
    assert counts(dsn) == {
        "consumers": 2,
        "api_keys": 1,
        "provider_credentials": 1,
        "quotas": 2,
        "audit_anchor": 1,
        "llm_usage": 1,
        "ledger_batches": 0,
    }
    source = SQLiteStore(str(sqlite_path))
    target = PostgresStore(dsn, node=node_name(str(sqlite_path.parent)), connect_timeout=5)
    try:
        assert target.consumers() == source.consumers()
        assert target.api_keys() == source.api_keys()
        assert target.provider_credentials() == source.provider_credentials()
        assert target.quota_counts() == source.quota_counts()
        assert [c.count for c in target.quota_counts()] == [15]
        assert target.quota_bases(8.5, [3]) == source.quota_bases(8.5, [3])
        assert target.usage(UsageQuery()) == source.usage(UsageQuery())
        # The anchor belongs to the node whose state directory held the file.
        assert target.audit_anchor("/var/log/fastgw/audit.log") == source.audit_anchor(
            "/var/log/fastgw/audit.log"
        )
    finally:
        source.close()
        target.close()


def test_a_target_with_rows_is_refused_unless_forced_and_a_second_copy_adds_nothing(
    sqlite_path: Path, postgres_dsn: str
) -> None:
    assert copy(sqlite_path, postgres_dsn)[0] == 0
    before = counts(postgres_dsn)
    rc, out = copy(sqlite_path, postgres_dsn)
    assert rc == 1 and "already holds rows (consumers 2, api_keys 1" in out and "--force" in out
    rc, out = copy(sqlite_path, postgres_dsn, "--force")
    assert rc == 0, out
    assert counts(postgres_dsn) == before
    assert all(line.split()[3] == "0" for line in out.splitlines() if line.split()[-1:] == ["ok"])


def test_a_row_the_target_cannot_take_fails_the_verification(sqlite_path: Path, postgres_dsn: str) -> None:
    target = PostgresStore(postgres_dsn, node="x", connect_timeout=5)
    target.add_consumer(Consumer(id="c_other", name="beta", team="", roles=(), metadata={}, created=0.0))
    target.close()
    rc, out = copy(sqlite_path, postgres_dsn, "--force")
    assert rc == 1
    assert "1 MISSING" in out and "incomplete copy" in out and "nothing was written" in out
    assert counts(postgres_dsn) == {t.name: int(t.name == "consumers") for t in TABLES}  # rolled back


def test_a_copy_that_fails_part_way_writes_nothing(sqlite_path: Path, postgres_dsn: str) -> None:
    target = PostgresStore(postgres_dsn, node="x", connect_timeout=5)
    # Taken name: acme's row is skipped, then its key has no consumer to belong to.
    target.add_consumer(Consumer(id="c_other", name="acme", team="", roles=(), metadata={}, created=0.0))
    target.close()
    rc, out = copy(sqlite_path, postgres_dsn, "--force")
    assert rc == 1 and "foreign key" in out
    assert counts(postgres_dsn) == {t.name: int(t.name == "consumers") for t in TABLES}


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("mysql:x", "postgres:dsn", "--from must be sqlite:PATH"),
        ("sqlite:/no/such/fastgw.db", "postgres:dsn", "no such file"),
        ("sqlite:{db}", "redis://x", "--to must be postgres:DSN"),
        ("sqlite:{db}", "postgres:env:FGW_TEST_UNSET_DSN", "FGW_TEST_UNSET_DSN is not set"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(
    sqlite_path: Path, source: str, target: str, message: str
) -> None:
    os.environ.pop("FGW_TEST_UNSET_DSN", None)
    done = fastgw("store", "copy", "--from", source.format(db=sqlite_path), "--to", target)
    assert done.returncode == 1 and message in done.stderr and len(done.stderr.splitlines()) == 1
