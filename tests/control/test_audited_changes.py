"""No consumer, key or provider-key change goes unaudited (README, "Failure modes"): the audit record is
written inside the change's store transaction, so when the audit log cannot be written the change is
refused (503) and nothing of it is stored, on SQLite as on PostgreSQL. Before, the record followed the
commit, and a failed write left the change in force with only a log line.

And no change is shown as made that was not: a record whose transaction fails after it (the database
refuses a later write or the COMMIT itself, a conflict at commit, a full disk) is answered in the log by
``EVENT.aborted``, and the log still verifies. Before, such a record stood alone, a phantom change."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from fastgw.audit import AuditLog, verify
from fastgw.control.auditing import Auditing
from fastgw.control.consumers import KeyService, KeyServiceError
from fastgw.control.provider_keys import ProviderKeyService
from fastgw.secrets_at_rest import MasterKey, MasterKeys, key_id
from fastgw.snapshot import KeySettings
from fastgw.store.base import CommitUnknownError, Store, StoreError
from fastgw.store.postgres import PostgresStore
from fastgw.store.sqlite import SQLiteStore
from tests.support.stores import StoreMaker
from tests.support.waiting import wait_until

SETTINGS = KeySettings(pepper_id="p1", peppers={"p1": b"pepper-for-audited-changes-000001"})


class Audit:
    """An audit log that can be made to fail as control/auditing.py's Auditing.change does: a 503."""

    def __init__(self) -> None:
        self.failing = False
        self.events: list[str] = []

    def __call__(self, event: str, **fields: Any) -> None:
        if self.failing:
            raise KeyServiceError(503, f"the audit log cannot be written ({event}): retry later")
        self.events.append(event)


@pytest.mark.parametrize(
    ("change", "unchanged"),
    [
        (
            lambda s: s.create_consumer({"name": "other"}),
            lambda s: [c["name"] for c in s.consumers()] == ["acme"],
        ),
        (lambda s: s.create_key({"consumer": "acme"}), lambda s: len(s.keys()) == 1),
        (lambda s: s.revoke(s.keys()[0]["id"]), lambda s: not s.keys()[0].get("revoked")),
        (lambda s: s.rotate(s.keys()[0]["id"], {}), lambda s: len(s.keys()) == 1),
        (lambda s: s.disable("acme"), lambda s: not s.consumer("acme").get("disabled")),
        (lambda s: s.delete_consumer("acme"), lambda s: s.consumer("acme")["name"] == "acme"),
        (lambda s: s.update(s.keys()[0]["id"], {"scopes": ["read"]}), lambda s: not s.keys()[0]["scopes"]),
    ],
)
def test_a_change_the_audit_log_cannot_record_is_refused_and_not_stored(
    make_store: StoreMaker,
    change: Callable[[KeyService], object],
    unchanged: Callable[[KeyService], bool],
) -> None:
    audit = Audit()
    pushes: list[object] = []
    service = KeyService(make_store(), lambda: SETTINGS, audit, pushes.append)
    service.create_consumer({"name": "acme"})
    service.create_key({"consumer": "acme"})
    pushed = len(pushes)
    audit.failing = True
    with pytest.raises(KeyServiceError) as refused:
        change(service)
    assert refused.value.status == 503
    assert unchanged(service), "the change was rolled back with its audit record"
    assert len(pushes) == pushed, "nothing was pushed to the workers"


# -- a change whose transaction fails after its audit record ---------------------------------------------
AUDIT_KEY = b"a" * 32
NOT_COMPARED = ("seq", "time", "mac")  # an .aborted record's own; all the rest is compared


class Node:
    """The control process's side of a change: a key service and a provider-key service writing a real
    audit log through control/auditing.py, as the control process wires them."""

    def __init__(self, store: Store, path: Path) -> None:
        self.store, self.path = store, path
        self.logs: list[str] = []
        self.pushes: list[object] = []
        self.log = AuditLog(str(path), AUDIT_KEY, store)
        change = Auditing(self.log, self.logs.append).change
        self.service = KeyService(store, lambda: SETTINGS, change, self.pushes.append)
        secret = os.urandom(32)
        master = MasterKeys(MasterKey(key_id(secret), secret))
        self.providers = ProviderKeyService(
            store, lambda: master, change, self.pushes.append, self.logs.append
        )

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines()]

    def events(self) -> list[str]:
        return [r["event"] for r in self.records()]

    def intact(self) -> bool:
        """What ``fastgw audit verify`` says: the chain holds and reaches the store's anchor."""
        result = verify(str(self.path), AUDIT_KEY, self.store.audit_anchor(str(self.path)))
        return result.ok and result.records == len(self.records())


def answered(original: dict[str, Any], aborted: dict[str, Any], reason: str, *names: str) -> None:
    """``aborted`` answers ``original``: it names it (event, seq and the given identifying fields), says
    why and holds nothing else."""
    expected = {
        "event": original["event"] + ".aborted",
        "original_event": original["event"],
        "original_seq": original["seq"],
        **{name: original[name] for name in names},
        "reason": reason,
    }
    assert {k: v for k, v in aborted.items() if k not in NOT_COMPARED} == expected
    assert aborted["seq"] > original["seq"]


def run_sql(make_store: StoreMaker, store: Store, sql: str) -> None:
    """SQL on the store's database over a connection of its own, as an operator's would be."""
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store.path)) as db:
            db.executescript(sql)
    else:
        assert make_store.dsn is not None
        with psycopg.connect(make_store.dsn, autocommit=True) as conn:
            conn.execute(sql.encode())


def refusal(backend: str, table: str) -> tuple[str, str]:
    """SQL making the database refuse every update of ``table`` (a trigger), and SQL undoing it."""
    if backend == "sqlite":
        return (
            f"CREATE TRIGGER refuse BEFORE UPDATE ON {table} BEGIN SELECT RAISE(ABORT, 'refused'); END",
            "DROP TRIGGER refuse",
        )
    return (
        "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION"
        f" 'refused'; END$$; CREATE TRIGGER refuse BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE"
        " FUNCTION refuse()",
        f"DROP TRIGGER refuse ON {table}",
    )


def test_a_change_the_database_refuses_after_its_audit_record_is_answered_by_an_aborted_record(
    make_store: StoreMaker, tmp_path: Path
) -> None:
    store = make_store()
    node = Node(store, tmp_path / "audit.log")
    node.service.create_consumer({"name": "acme"})
    key = node.service.create_key({"consumer": "acme"})["id"]
    pushed = len(node.pushes)
    refuse, allow = refusal(make_store.backend, "api_keys")
    run_sql(make_store, store, refuse)  # a rotation's update of the old key fails after key.rotate
    with pytest.raises(StoreError):  # the admin API answers 503 store-unavailable
        node.service.rotate(key, {})
    *_, rotate, aborted = node.records()
    assert rotate["event"] == "key.rotate" and rotate["key"] != key  # the successor it was to issue
    answered(rotate, aborted, "StoreError", "key", "prefix", "consumer")
    [kept] = node.service.consumer("acme")["keys"]  # what fastgw consumers show answers
    assert kept["id"] == key and not kept.get("replaced_by")
    assert len(node.pushes) == pushed and node.intact() and not node.logs
    # The same change, once the database takes it, is recorded with no .aborted record.
    run_sql(make_store, store, allow)
    node.service.rotate(key, {})
    assert node.events()[-2:] == ["key.rotate", "key.rotate.grace"]
    assert sum(e.endswith(".aborted") for e in node.events()) == 1 and node.intact()


def test_a_change_whose_audit_anchor_the_store_refuses_is_refused_and_its_record_answered(
    make_store: StoreMaker, tmp_path: Path
) -> None:
    """The store fails between a record and its anchor (as a lost connection does): the record is in the
    file, the change cannot commit, and the record is answered."""
    store = make_store()
    node = Node(store, tmp_path / "audit.log")
    node.service.create_consumer({"name": "acme"})
    refuse, allow = refusal(make_store.backend, "audit_anchor")
    run_sql(make_store, store, refuse)
    with pytest.raises(KeyServiceError) as refused:
        node.service.disable("acme")
    assert refused.value.status == 503  # audit-unavailable: retry later
    *_, disable, aborted = node.records()
    assert disable["event"] == "consumer.disable"
    answered(disable, aborted, "AuditAnchorError", "consumer", "name")
    assert not node.service.consumer("acme").get("disabled")
    assert node.intact()  # the anchor is behind the file, which a verification allows
    assert [line.split(":")[0] for line in node.logs] == [
        f"AUDIT ANCHOR NOT MOVED (consumer.disable, seq {disable['seq']})",
        f"AUDIT ANCHOR NOT MOVED (consumer.disable.aborted, seq {aborted['seq']})",
    ]
    run_sql(make_store, store, allow)
    node.service.disable("acme")
    assert node.events()[-1] == "consumer.disable" and node.service.consumer("acme").get("disabled")
    anchor = store.audit_anchor(str(node.path))
    assert anchor is not None and anchor.seq == len(node.records()) and node.intact()


@pytest.fixture
def postgres_node(postgres_dsn: str, tmp_path: Path) -> Iterator[tuple[Node, str]]:
    store = PostgresStore(postgres_dsn, node="a", connect_timeout=5)
    yield Node(store, tmp_path / "audit.log"), postgres_dsn
    store.close()


def test_a_commit_postgresql_refuses_answers_every_record_the_change_wrote(
    postgres_node: tuple[Node, str],
) -> None:
    """The COMMIT itself fails (a deferred constraint trigger, checked at commit, says serialization
    failure: what a concurrent transaction on another node causes), after both records of a rotation."""
    node, dsn = postgres_node
    node.service.create_consumer({"name": "acme"})
    key = node.service.create_key({"consumer": "acme"})["id"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION conflict() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION"
            " 'conflict' USING ERRCODE = 'serialization_failure'; END$$;"
            " CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON api_keys DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW EXECUTE FUNCTION conflict()"
        )
    with pytest.raises(KeyServiceError) as refused:
        node.service.rotate(key, {})
    assert refused.value.status == 409  # look and retry
    *_, rotate, grace, rotate_aborted, grace_aborted = node.records()
    assert [rotate["event"], grace["event"]] == ["key.rotate", "key.rotate.grace"]
    answered(rotate, rotate_aborted, "ConflictError", "key", "prefix", "consumer")
    answered(grace, grace_aborted, "ConflictError", "key")
    assert [k["id"] for k in node.service.consumer("acme")["keys"]] == [key] and node.intact()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TRIGGER at_commit ON api_keys")
    node.service.rotate(key, {})
    assert node.events()[-2:] == ["key.rotate", "key.rotate.grace"]
    assert sum(e.endswith(".aborted") for e in node.events()) == 2 and node.intact()


def test_a_connection_lost_during_the_commit_is_answered_as_an_unknown_outcome(
    postgres_node: tuple[Node, str],
) -> None:
    """The connection dies while the COMMIT runs (a deferred trigger ends its own backend): the database
    may have made the change or not, and the log says exactly that, not that it did not take effect."""
    node, dsn = postgres_node
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION vanish() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
            " PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END$$;"
            " CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON consumers DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW EXECUTE FUNCTION vanish()"
        )
    with pytest.raises(CommitUnknownError):  # the admin API's 503 outcome-unknown, not "retry later"
        node.service.create_consumer({"name": "ghost"})
    *_, created, unknown = node.records()
    assert created["event"] == "consumer.create" and created["name"] == "ghost"
    assert unknown["event"] == "consumer.create.outcome_unknown"
    assert (unknown["original_seq"], unknown["reason"]) == (created["seq"], "CommitUnknownError")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TRIGGER at_commit ON consumers")
    wait_until(node.intact, 10.0, "the store back and the log verified against its anchor")


class CommitFails(SQLiteStore):
    """SQLite whose next commit fails, as a full disk fails one: ``at_commit`` raises at the end of the
    outermost block, the block's writes roll back and the error reaches the caller. An override, since
    SQLite checks nothing at COMMIT that a test could trip (no deferred constraints in this schema); on
    PostgreSQL the database itself refuses the commit (above)."""

    def __init__(self, path: str) -> None:
        self.at_commit: Callable[[], None] | None = None
        self._blocks = 0
        super().__init__(path)  # which migrates, in a transaction

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._blocks += 1
        try:
            with super().transaction():
                yield
                if self._blocks == 1 and self.at_commit is not None:
                    failure, self.at_commit = self.at_commit, None
                    failure()
        finally:
            self._blocks -= 1


@pytest.fixture
def sqlite_node(tmp_path: Path) -> Iterator[tuple[Node, CommitFails]]:
    store = CommitFails(str(tmp_path / "fastgw.db"))
    yield Node(store, tmp_path / "audit.log"), store
    store.close()


def disk_full() -> None:
    raise StoreError("fastgw.db: database or disk is full")


@pytest.mark.parametrize(
    ("change", "event", "names"),
    [
        (lambda n: n.service.create_consumer({"name": "acme"}), "consumer.create", ("consumer", "name")),
        (
            lambda n: n.providers.set_key("openai", {"key": "sk-proj-not-a-real-key-0001"}),
            "provider.set_key",
            ("provider", "prefix", "key_id"),
        ),
    ],
)
def test_a_commit_that_fails_answers_the_record_and_the_change_is_not_in_force(
    sqlite_node: tuple[Node, CommitFails],
    change: Callable[[Node], object],
    event: str,
    names: tuple[str, ...],
) -> None:
    node, store = sqlite_node
    store.at_commit = disk_full
    with pytest.raises(StoreError):
        change(node)
    assert node.events() == [event, event + ".aborted"]
    original, aborted = node.records()
    answered(original, aborted, "StoreError", *names)
    assert not store.consumers() and not store.provider_credentials() and not node.pushes
    assert node.intact() and not node.logs
    change(node)  # the disk has room again: the change is made and recorded, with no .aborted record
    assert node.events() == [event, event + ".aborted", event] and node.intact()
    assert store.consumers() or store.provider_credentials()


def test_an_aborted_record_that_cannot_be_written_is_logged_and_the_change_fails_with_its_own_error(
    sqlite_node: tuple[Node, CommitFails], capsys: pytest.CaptureFixture[str]
) -> None:
    """The disk fails at the commit and the audit log with it: the caller still gets the store's error
    (not the audit log's), and stderr says which record stands for a change that did not take effect."""
    node, store = sqlite_node
    moved = node.path.with_name("audit.log.kept")

    def disk_gone() -> None:
        node.path.rename(moved)
        node.path.mkdir()  # the log's path cannot be opened for writing, even by root
        disk_full()

    store.at_commit = disk_gone
    with pytest.raises(StoreError, match="disk is full"):
        node.service.create_consumer({"name": "acme"})
    [record] = [orjson.loads(line) for line in moved.read_bytes().splitlines()]
    assert record["event"] == "consumer.create" and not store.consumers()
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"fastgw[{os.getpid()}]: AUDIT WRITE FAILED (consumer.create.aborted): ")
    assert line.endswith(
        f"the record seq {record['seq']} (consumer.create) stands for a change that did not take effect"
        " (StoreError)"
    )
    assert not node.logs  # Auditing.change leaves that line to AuditedChanges: one line, not two


# -- an event (a reload, a worker's note, the start): logged as what became of its record ---------------
def test_an_event_whose_anchor_the_store_refuses_is_logged_as_in_the_file_not_as_lost(
    make_store: StoreMaker, tmp_path: Path
) -> None:
    """The record is in the file and only the anchor stayed behind: the line says so, with the anchor's
    seq, what ``fastgw audit verify`` makes of it and what brings the anchor back, in the words a change's
    line uses (one helper). Before, it said AUDIT WRITE FAILED, as if the record were lost."""
    store = make_store()
    node = Node(store, tmp_path / "audit.log")
    auditing = Auditing(node.log, node.logs.append)
    auditing.event("start")
    refuse, allow = refusal(make_store.backend, "audit_anchor")
    run_sql(make_store, store, refuse)
    auditing.event("reload", reason="SIGHUP", ok=True)
    with pytest.raises(KeyServiceError):
        node.service.create_consumer({"name": "acme"})
    start, reload, create, _aborted = node.records()
    assert (reload["event"], create["event"]) == ("reload", "consumer.create")
    event_line, change_line, _aborted_line = node.logs
    assert event_line.startswith(f"AUDIT ANCHOR NOT MOVED (reload, seq {reload['seq']}): ")
    assert f"; the record is in {node.path}, the store's anchor stays at seq {start['seq']}: " in event_line
    assert "`fastgw audit verify` passes" in event_line and "AUDIT WRITE FAILED" not in "".join(node.logs)
    tail = event_line.split("): ", 1)[1]
    assert change_line == f"AUDIT ANCHOR NOT MOVED (consumer.create, seq {create['seq']}): {tail}" + (
        "; consumer.create is refused"
    )
    assert node.intact()  # what the line promises: verify passes, the anchor behind the file
    run_sql(make_store, store, allow)
    auditing.event("reload", reason="SIGHUP", ok=True)  # the next record moves the anchor past them all
    anchor = store.audit_anchor(str(node.path))
    assert anchor is not None and anchor.seq == len(node.records()) and node.intact()


def test_an_event_whose_record_cannot_be_written_is_logged_naming_the_file(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "fastgw.db"))
    node = Node(store, tmp_path / "audit.log")
    auditing = Auditing(node.log, node.logs.append)
    node.path.mkdir()  # the log's path cannot be opened for writing, even by root
    auditing.event("reload", reason="SIGHUP", ok=False)
    assert node.logs == [
        f"AUDIT WRITE FAILED (reload): {node.path}: Is a directory; this reload is not in the audit log"
    ]
    store.close()
