"""Quotas: day and month counts kept in the store, surviving a graceful restart and, minus at most one
flush interval, a crash of the whole node."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from fastgw.store.postgres import PostgresStore
from fastgw.store.sqlite import SQLiteStore
from tests.support.admin import TOKEN, Admin
from tests.support.clients import get
from tests.support.gateways import Gateway
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.rate_limits import limited_config
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until


def quota_config(upstream_port: int, tmp_path: Path, state: Path, quota: str) -> tuple[str, int]:
    """The /limited route with ``quota``, its counts sent every 0.2 s to the store in ``state``, and the
    admin API (its port returned) with the test token."""
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    admin_port = free_port()
    extra = (
        f'[rate_limits]\nquota_flush = 0.2\n\n[state]\ndir = "{state}"\n\n'
        f'[admin]\nbind = "127.0.0.1:{admin_port}"\ntoken = {{ file = "{token}" }}\n'
    )
    return limited_config(upstream_port, quota, extra=extra), admin_port


def stored_counts(admin: Admin) -> list[int]:
    """The quota counts the admin API reads from the store; none while it answers an error."""
    status, body = admin.json("GET", "/quotas")
    return [q["count"] for q in body["quotas"]] if status == 200 else []


def postgres_quota_config(upstream_port: int, tmp_path: Path, dsn: str, *, rate: int) -> tuple[str, int]:
    """quota_config with a daily quota of ``rate`` per route, kept in PostgreSQL at ``dsn``."""
    (tmp_path / "store.dsn").write_text(dsn + "\n")
    config, admin_port = quota_config(
        upstream_port,
        tmp_path,
        tmp_path / "state",
        f'{{ name = "daily", rate = {rate}, quota = "day", key = "route" }}',
    )
    config += (
        f'[store]\nbackend = "postgres"\ndsn = {{ file = "{tmp_path / "store.dsn"}" }}\nconnect_timeout = 2\n'
    )
    return config, admin_port


def test_daily_quota_survives_a_graceful_restart(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    state = tmp_path / "shared-state"
    config, admin_port = quota_config(
        upstream.port, tmp_path, state, '{ name = "daily", rate = 5, quota = "day", key = "ip" }'
    )
    first = gateway_factory(config, workers=2)
    statuses = [get(first.port, "/limited/a").status for _ in range(3)]
    assert statuses == [200, 200, 200]
    ok = get(first.port, "/limited/a")
    assert ok.header(b"ratelimit-policy") == b'"daily";q=5;w=86400'
    assert (ok.header(b"ratelimit") or b"").startswith(b'"daily";r=1;t=')
    admin = Admin(admin_port)

    def stored() -> list[tuple[str, str, int]]:
        return [(q["limit"], q["key"], q["count"]) for q in admin.json("GET", "/quotas")[1]["quotas"]]

    # Both workers' counts reach the store within a flush interval or two.
    wait_until(lambda: stored() == [("limited:daily", "127.0.0.1", 4)], 5, "4 counted in the store")
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(15) == 0
    second = gateway_factory(config, workers=2)
    assert [get(second.port, "/limited/a").status for _ in range(2)] == [200, 429]
    refused = get(second.port, "/limited/a")
    assert refused.status == 429 and b"daily" in (refused.header(b"ratelimit") or b"")


def test_a_crash_loses_at_most_one_flush_interval(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    state = tmp_path / "shared-state"
    config, admin_port = quota_config(
        upstream.port, tmp_path, state, '{ name = "monthly", rate = 10, quota = "month", key = "route" }'
    )
    first = gateway_factory(config)
    assert [get(first.port, "/limited/x").status for _ in range(6)] == [200] * 6
    admin = Admin(admin_port)
    # These six reached the store: seen there, not assumed after a sleep (a busy machine delays a flush).
    wait_until(
        lambda: [q["count"] for q in admin.json("GET", "/quotas")[1]["quotas"]] == [6], 10, "6 in the store"
    )
    assert get(first.port, "/limited/x").status == 200  # this one may be lost with the crash
    for pid in (first.worker_pid(0), first.control_pid(), first.proc.pid):
        os.kill(pid, signal.SIGKILL)
    first.proc.wait(10)
    wait_until(lambda: not _alive(first), 5, "the crashed node's processes to be gone")
    second = gateway_factory(config)
    admitted = 0
    while get(second.port, "/limited/x").status == 200:
        admitted += 1
        assert admitted <= 10, "the quota was forgotten"
    lost = admitted - (10 - 7)
    print(f"after a crash: {admitted} more admitted of 10 (7 were admitted before it; lost {lost})")
    assert 0 <= lost <= 1
    first.proc.returncode = 0  # it was killed on purpose: the fixture's exit-status check does not apply


def _alive(gw: Gateway) -> bool:
    try:
        os.kill(gw.worker_pid(0), 0)
    except (ProcessLookupError, OSError, ValueError, AssertionError):
        return False
    return True


def test_a_control_process_killed_9_loses_and_doubles_no_quota_counts(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> None:
    """Each worker keeps its quota report until the control process acknowledges it (written to the
    store) and sends it again to its successor, which skips a batch number it has applied. The control
    process is stopped (SIGSTOP) while requests are admitted, for several flush intervals, so each
    worker's report is sent to it and never read; then it is killed -9. The store ends with every
    admission, once."""
    config, admin_port = quota_config(
        upstream.port,
        tmp_path,
        tmp_path / "state",
        '{ name = "daily", rate = 1000, quota = "day", key = "route" }',
    )
    gw = gateway_factory(config, workers=2)
    admin = Admin(admin_port)

    def stored() -> list[int]:
        return [q["count"] for q in admin.json("GET", "/quotas")[1]["quotas"]]

    assert [get(gw.port, "/limited/x").status for _ in range(5)] == [200] * 5
    wait_until(lambda: stored() == [5], 10, "5 in the store")
    victim = gw.control_pid()
    os.kill(victim, signal.SIGSTOP)
    try:
        assert [get(gw.port, "/limited/x").status for _ in range(12)] == [200] * 12  # on both workers
        # Nothing to poll while the control process is stopped: the reports leave within a flush
        # interval (0.2 s) and a tick (0.1 s) of their admissions; five intervals leave room to spare.
        time.sleep(1.0)
    finally:
        os.kill(victim, signal.SIGKILL)
    wait_until(lambda: gw.control_pid() != victim, 10, "the control process to be replaced")
    wait_until(lambda: stored() == [17], 10, "all 17 admissions in the store")
    assert gw.stop() == 0  # the workers' last reports: none may add an admission twice
    store = SQLiteStore(str(tmp_path / "state" / "fastgw.db"))
    try:
        assert [c.count for c in store.quota_counts()] == [17]
    finally:
        store.close()


def test_quota_counts_admitted_while_postgres_is_down_reach_it_once_when_it_returns(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    tmp_path: Path,
    postgres_server: PostgresServer,
) -> None:
    """The store is down, not the control process: its writes fail, the workers keep their reports
    (unacknowledged) and send them again every 2 s, admissions meanwhile adding up behind them. Once
    PostgreSQL is back, every admission is in it, once, with nothing restarted."""
    dsn = postgres_server.create_database()
    config, admin_port = postgres_quota_config(upstream.port, tmp_path, dsn, rate=1000)
    gw = gateway_factory(config, workers=2)
    admin = Admin(admin_port)

    assert [get(gw.port, "/limited/x").status for _ in range(5)] == [200] * 5
    wait_until(lambda: stored_counts(admin) == [5], 10, "5 in the store")
    postgres_server.stop()
    try:
        # The node keeps limiting from its shared table while its store is down; the second six come
        # after a report failed, so some wait behind it in a worker's quota book.
        assert [get(gw.port, "/limited/x").status for _ in range(6)] == [200] * 6
        wait_until(lambda: "QUOTA WRITE FAILED" in gw.stderr(), 15, "a quota write to fail")
        assert [get(gw.port, "/limited/x").status for _ in range(6)] == [200] * 6
    finally:
        postgres_server.start()
    wait_until(lambda: "quota writes resumed" in gw.stderr(), 30, "the recovery to be logged")
    # Logged once every report that failed is written (each worker resends on its own 2 s clock), not at
    # the first write that succeeds. Admissions counted behind a failed report follow at the worker's next
    # `quota_flush`, and a report that reached the control process while it was blocked on the dead
    # store is written after it: neither failed, so the line does not wait for them.
    wait_until(lambda: stored_counts(admin) == [17], 5, "all 17 admissions in PostgreSQL")
    assert gw.stderr().count("QUOTA WRITE FAILED") == 1, "one line per outage, not one per resend"
    unprefixed = [line for line in gw.stderr().splitlines() if not line.startswith("fastgw[")]
    assert not unprefixed, "no library's per-retry warnings among the gateway's lines"
    assert gw.stop() == 0
    store = PostgresStore(dsn, node="test", migrate=False)
    try:
        assert [c.count for c in store.quota_counts()] == [17]
    finally:
        store.close()


def test_the_admin_api_answers_at_once_while_postgres_is_down_and_is_back_a_second_after_it(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    tmp_path: Path,
    postgres_server: PostgresServer,
) -> None:
    """Each worker's unwritten quota report comes back every 2 s, and each is a store call on the control
    process's loop. When each waited 2 s for a connection, four workers' reports held the loop for the
    whole outage (the admin API timed out after 15 s). Now none waits (a refused connect takes a
    millisecond; tests/store/test_pg_keeper.py covers a host that does not answer), and after an outage
    longer than a pool's backoff (1 + 2 + 4 s) the store works again within RETRY_SECONDS of the
    database's return."""
    from fastgw.store.pg_keeper import RETRY_SECONDS

    config, admin_port = postgres_quota_config(
        upstream.port, tmp_path, postgres_server.create_database(), rate=1000000
    )
    gw = gateway_factory(config, workers=4)
    admin = Admin(admin_port)
    assert admin.json("GET", "/quotas")[0] == 200
    postgres_server.stop()
    try:
        answers: list[tuple[int, float]] = []
        ends = time.monotonic() + 9  # four rounds of every worker's 2 s resends, past 1 + 2 + 4 s
        while time.monotonic() < ends:
            assert get(gw.port, "/limited/x").status == 200  # admissions for the workers to report
            asked = time.monotonic()
            status, _ = admin.json("GET", "/quotas")
            answers.append((status, time.monotonic() - asked))
    finally:
        postgres_server.start()
    back = time.monotonic()
    assert len(answers) >= 9, f"the admin API answered {len(answers)} times in 9 s: {answers}"
    assert {status for status, _ in answers} == {503}, "the store is down: said so, not hung"
    # A refused connection fails in a millisecond or so; the bound, half the old wait, leaves room for
    # the loop's turn on a loaded machine.
    assert max(took for _, took in answers) < 1.0, answers
    wait_until(lambda: admin.json("GET", "/quotas")[0] == 200, RETRY_SECONDS + 1.5, "the store back")
    assert time.monotonic() - back < RETRY_SECONDS + 1.5
    assert "QUOTA WRITE FAILED" in gw.stderr()


def test_the_admin_api_answers_while_another_session_holds_a_lock_the_store_needs(
    gateway_factory: Callable[..., Gateway],
    upstream: TestUpstream,
    tmp_path: Path,
    postgres_server: PostgresServer,
) -> None:
    """PostgreSQL up, but a session outside fastgw (a migration, an operator's open transaction) holds a
    lock on the quota table: each store call waited for it with no bound, on the control process's loop,
    so the admin API hung for as long as the lock was held. Now a statement waits LOCK_WAIT_MS at most
    and calls fail at once for LOCKED_SECONDS after one did: the admin API answers 503 within about a
    second, and once the lock is gone every admission counted meanwhile reaches the store, once."""
    import psycopg

    from fastgw.store.pg_keeper import LOCK_WAIT_MS, LOCKED_SECONDS

    dsn = postgres_server.create_database()
    config, admin_port = postgres_quota_config(upstream.port, tmp_path, dsn, rate=1000000)
    gw = gateway_factory(config, workers=4)
    admin = Admin(admin_port)

    assert [get(gw.port, "/limited/x").status for _ in range(3)] == [200] * 3
    wait_until(lambda: stored_counts(admin) == [3], 10, "3 in the store")
    admitted = 3
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE quotas IN ACCESS EXCLUSIVE MODE")  # held to the block's end
        answers: list[tuple[int, float]] = []
        ends = time.monotonic() + 2 * LOCKED_SECONDS + 1  # past two of the fail-at-once windows
        while time.monotonic() < ends:
            assert get(gw.port, "/limited/x").status == 200  # admissions for the workers to report
            admitted += 1
            asked = time.monotonic()
            status, _ = admin.json("GET", "/quotas")
            answers.append((status, time.monotonic() - asked))
        holder.rollback()
    assert {status for status, _ in answers} == {503}, "the table is locked: said so, not hung"
    # A call waits LOCK_WAIT_MS at most, and the admin's call at most one other's wait before its own
    # (both fail then); the rest is the loop's turn on a loaded machine.
    assert max(took for _, took in answers) < 2 * LOCK_WAIT_MS / 1000 + 0.5, answers
    assert len(answers) >= 2 * LOCKED_SECONDS, f"the admin API answered {len(answers)} times: {answers}"
    # The reports kept by the workers (resent every 2 s) land once the lock is gone.
    wait_until(
        lambda: stored_counts(admin) == [admitted], LOCKED_SECONDS + 6, f"all {admitted} admissions stored"
    )
    assert gw.stop() == 0
