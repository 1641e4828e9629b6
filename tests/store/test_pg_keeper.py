"""The PostgreSQL store's connections (store/pg_keeper.py) through the clock and the outage: a connection
the server ended is replaced unseen, calls fail at once while the database is down, a host that never
answers costs one call the connect timeout (a thread reconnects after it), and the store works again a
second after the database is back, however long it was away."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from fastgw.store.base import Consumer, StoreError
from fastgw.store.pg_keeper import (
    CONNECT_SECONDS,
    LOCK_WAIT_MS,
    LOCKED_SECONDS,
    RETRY_SECONDS,
    ConnectionKeeper,
)
from fastgw.store.postgres import PostgresStore
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_until

ACME = Consumer(id="c_1", name="acme", team="", roles=(), metadata={}, created=1.0)


def test_a_connection_the_server_ended_is_replaced_without_an_error(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, node="a")
    try:
        store.add_consumer(ACME)
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert ended == (1,), "the store keeps one connection between calls"
        assert [c.name for c in store.consumers()] == ["acme"]
    finally:
        store.close()


def test_calls_fail_at_once_while_the_database_is_down_and_work_a_second_after_it_returns(
    postgres_server: PostgresServer,
) -> None:
    store = PostgresStore(postgres_server.create_database(), node="a")
    try:
        store.add_consumer(ACME)
        postgres_server.stop()
        try:
            for attempt in range(5):
                asked = time.monotonic()
                with pytest.raises(StoreError) as err:
                    store.consumers()
                took = time.monotonic() - asked
                # A refused connection, or none tried at all: never a wait on the loop.
                assert took < 0.5, (attempt, took)
                assert "PostgreSQL at 127.0.0.1:" in str(err.value) and "\n" not in str(err.value)
            assert "reconnecting in the background" in str(err.value), "not tried on the caller's time"
            down_until = time.monotonic() + 3 * RETRY_SECONDS  # the thread's reconnects fail meanwhile
            while time.monotonic() < down_until:
                with pytest.raises(StoreError):
                    store.consumers()
        finally:
            postgres_server.start()
        back = time.monotonic()

        def works() -> bool:
            try:
                return [c.name for c in store.consumers()] == ["acme"]
            except StoreError:
                return False

        wait_until(works, RETRY_SECONDS + 1.0, "the store to work again")
        assert time.monotonic() - back < RETRY_SECONDS + 1.0
    finally:
        store.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections the kernel accepts and nobody answers: a host gone silent."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_a_host_that_never_answers_costs_one_call_the_connect_timeout_and_the_next_nothing(
    silent_port: int,
) -> None:
    keeper = ConnectionKeeper(f"postgresql://gw:pw@127.0.0.1:{silent_port}/gw", "PostgreSQL at silent")
    asked = time.monotonic()
    with pytest.raises(StoreError, match="cannot connect"), keeper.connection():
        pass
    assert CONNECT_SECONDS - 0.5 < time.monotonic() - asked < CONNECT_SECONDS + 1.5
    # Past several of the thread's reconnects (each as silent): no call waits for one. (The bound is
    # half a connect timeout, not the microseconds it takes: a loaded machine's pauses are not waits.)
    ends = time.monotonic() + CONNECT_SECONDS + 2 * RETRY_SECONDS
    while time.monotonic() < ends:
        asked = time.monotonic()
        with pytest.raises(StoreError, match="reconnecting in the background"), keeper.connection():
            pass
        assert time.monotonic() - asked < CONNECT_SECONDS / 2
        time.sleep(0.05)  # pacing: a call every 50 ms
    assert keeper.reconnecting
    keeper.close()
    wait_until(lambda: not keeper.reconnecting, CONNECT_SECONDS + 1, "the thread to stop after close()")
    with pytest.raises(StoreError, match="the store is closed"), keeper.connection():
        pass


def test_a_host_name_is_looked_up_within_the_connect_timeout(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq's connect_timeout does not bound its name lookup: a silent DNS server held the caller (the
    control process's loop) for as long as the resolver tried. The keeper looks the name up itself,
    within the bound, and falls back on what the last lookup of that name found."""
    named = postgres_server.create_database().replace("@127.0.0.1:", "@localhost:")
    store = PostgresStore(named, node="a")
    try:
        store.add_consumer(ACME)  # a name that resolves: connected through its addresses
        assert [c.name for c in store.consumers()] == ["acme"]
    finally:
        store.close()

    released = threading.Event()

    def silent_dns(*args: object, **kwargs: object) -> object:
        released.wait(60)  # a resolver that never answers (until the test ends)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", silent_dns)
    keeper = ConnectionKeeper(named, "PostgreSQL at localhost")
    unknown = ConnectionKeeper(named.replace("@localhost:", "@db.never-resolved.example:"), "PostgreSQL")
    try:
        asked = time.monotonic()
        with keeper.connection() as conn:  # the addresses localhost's lookup found above
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert time.monotonic() - asked < CONNECT_SECONDS + 1.5
        asked = time.monotonic()
        refused = pytest.raises(StoreError, match=r"looking up db\.never-resolved\.example took more than")
        with refused, unknown.connection():
            pass
        assert time.monotonic() - asked < CONNECT_SECONDS + 1.5
    finally:
        keeper.close()
        unknown.close()
        released.set()


def test_a_server_that_refuses_the_login_is_tried_ever_less_often_until_it_accepts(
    postgres_server: PostgresServer,
) -> None:
    """Each refused try is a FATAL line in PostgreSQL's log, and only an operator ends a refusal: the
    reconnecting thread's tries space out (1, 2, 4 s...) instead of one a second."""
    owner = postgres_server.create_database()
    role = f"gw_{int(time.monotonic() * 1000) % 10**8}"
    with psycopg.connect(owner, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    keeper = ConnectionKeeper(owner.replace("fastgw@", f"{role}@"), "PostgreSQL as the role")
    refusal = f'role "{role}" is not permitted to log in'
    try:
        with keeper.connection() as conn:
            conn.execute("SELECT 1")
        with psycopg.connect(owner, autocommit=True) as admin:
            admin.execute(f"ALTER ROLE {role} NOLOGIN")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
        with pytest.raises(StoreError, match="not permitted to log in"), keeper.connection():
            pass
        began = time.monotonic()
        # The window the tries are counted in: a try a second would be 6 more; spaced out, 2 (1 s, 3 s).
        time.sleep(6.5)
        tries = postgres_server.log.read_text().count(refusal)
        assert 2 <= tries <= 4, f"{tries} refused logins in {time.monotonic() - began:.1f} s"
        with psycopg.connect(owner, autocommit=True) as admin:
            admin.execute(f"ALTER ROLE {role} LOGIN")

        def works() -> bool:
            try:
                with keeper.connection() as conn:
                    conn.execute("SELECT 1")
            except StoreError:
                return False
            return True

        wait_until(works, 4 + 2, "the next try (7 s after the refusal) to be accepted")
    finally:
        keeper.close()


@pytest.mark.parametrize(
    ("options", "environment", "shown"),
    [
        ("", "", str(LOCK_WAIT_MS)),
        ("-c lock_timeout=7s", "", "7000"),
        ("", "-c lock_timeout=9s", "9000"),  # PGOPTIONS is the operator's too
        ("-c search_path=public", "", str(LOCK_WAIT_MS)),  # not a startup option: poolers refuse those
    ],
)
def test_a_statement_waits_for_a_lock_at_most_lock_wait_ms_unless_the_operator_says_otherwise(
    postgres_dsn: str, options: str, environment: str, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if environment:
        monkeypatch.setenv("PGOPTIONS", environment)
    dsn = psycopg.conninfo.make_conninfo(postgres_dsn, options=options) if options else postgres_dsn
    keeper = ConnectionKeeper(dsn, "PostgreSQL under test")
    try:
        with keeper.connection() as conn:
            assert conn.execute("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'").fetchone() == (
                shown,
            )
    finally:
        keeper.close()


def test_calls_fail_at_once_for_locked_seconds_after_one_waited_out_a_lock(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, node="a")
    try:
        with psycopg.connect(postgres_dsn) as holder:
            holder.execute("LOCK TABLE consumers IN ACCESS EXCLUSIVE MODE")
            asked = time.monotonic()
            with pytest.raises(StoreError) as waited:
                store.consumers()
            assert LOCK_WAIT_MS / 1000 <= time.monotonic() - asked < LOCK_WAIT_MS / 1000 + 1.0
            assert "lock timeout" in str(waited.value)
            asked = time.monotonic()
            with pytest.raises(StoreError) as refused:
                store.consumers()
            assert time.monotonic() - asked < 0.1, "within LOCKED_SECONDS: not tried again"
            assert "another session holds" in str(refused.value)
            holder.rollback()
        wait_until(lambda: _answers(store), LOCKED_SECONDS + 1, "calls tried again after LOCKED_SECONDS")
        # The same inside a transaction block, where the store turns the driver's error into its own.
        with psycopg.connect(postgres_dsn) as holder:
            holder.execute("LOCK TABLE consumers IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreError), store.transaction():
                store.add_consumer(ACME)
            asked = time.monotonic()
            with pytest.raises(StoreError):
                store.consumers()
            assert time.monotonic() - asked < 0.1, "a lock wait inside a transaction opens the window too"
            holder.rollback()
        wait_until(lambda: _answers(store), LOCKED_SECONDS + 1, "calls tried again after LOCKED_SECONDS")
    finally:
        store.close()


def _answers(store: PostgresStore) -> bool:
    try:
        store.consumers()
    except StoreError:
        return False
    return True
