"""The usage ledger through a PostgreSQL outage (issue 24, "Outage"): a gateway on a real PostgreSQL serves
LLM traffic (the official OpenAI SDK against the fake provider) while the database is stopped and started
again. Every request with a cached key succeeds; what the workers report meanwhile is spooled on disk
(control/ledger_spool.py) and replayed after, so the ledger's totals equal what the provider served,
exactly: none lost, none counted twice, even with the control process killed -9 while rows wait in the
spool."""

from __future__ import annotations

import os
import signal
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.api_keys import issue
from tests.support.cluster import ADMIN_TOKEN, admin_call
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateways import Gateway
from tests.support.ledger import ask, ledger_config, postgres_store, served, spooled_requests, start_fake
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_until

RECOVERY_SECONDS = 30  # the store reconnects within 1 s, the spool's replay retry (<= 5 s) follows;
# generous: CI's machine is shared


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = start_fake()
    yield server
    server.stop_thread()


def start(
    gateway_factory: Callable[..., Gateway], fake: FakeOpenAI, secrets: Path, dsn: str
) -> tuple[Gateway, int, list[str]]:
    admin = free_port()
    gw = gateway_factory(ledger_config(fake.port, admin, secrets) + postgres_store(secrets, dsn), workers=2)
    return gw, admin, [issue(gw, "acme")[0], issue(gw, "zeta")[0]]


def ledger(admin: int) -> dict[str, int] | None:
    """The ledger's totals (None while the store cannot be read)."""
    status, body = admin_call(admin, "GET", "/usage")
    if status != 200:
        return None
    rows = body["usage"]
    keys = ("requests", "prompt_tokens", "completion_tokens")
    return {k: sum(r[k] for r in rows) for k in keys} if rows else dict.fromkeys(keys, 0)


def gauge(admin: int, name: str) -> float:
    """A control-process gauge from the admin API's /metrics (what an alert watches)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=15) as resp:
        text = resp.read().decode()
    [line] = [ln for ln in text.splitlines() if ln.startswith(f"{name} ")]
    return float(line.split()[1])


def truth(fake: FakeOpenAI) -> dict[str, int]:
    sums = served(fake)
    return {k: sum(s[k] for s in sums.values()) for k in ("requests", "prompt_tokens", "completion_tokens")}


def settled(admin: int, fake: FakeOpenAI, timeout: float) -> dict[str, int]:
    return wait_until(lambda: (found := ledger(admin)) == truth(fake) and found, timeout, "ledger == served")


class Load:
    """Requests from two threads until stopped; counts successes and failures."""

    def __init__(self, gw: Gateway, keys: list[str]) -> None:
        self.gw, self.keys = gw, keys
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(2)]

    def _run(self, n: int) -> None:
        i = n
        while not self._stop.is_set():
            try:
                ask(self.gw.url, self.keys[i % 2], "house" if i % 4 == 3 else "mini", i)
                self.ok += 1
            except Exception as exc:
                self.failed.append(repr(exc))
            i += 2

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_an_outage_under_load_fails_no_request_and_the_ledger_ends_exact(
    gateway_factory: Callable[..., Gateway],
    fake: FakeOpenAI,
    secrets_dir: Path,
    postgres_server: PostgresServer,
) -> None:
    gw, admin, keys = start(gateway_factory, fake, secrets_dir, postgres_server.create_database())
    with Load(gw, keys) as load:
        wait_until(lambda: load.ok >= 6, 20, "traffic before the outage")
        postgres_server.stop()
        try:
            down_at = load.ok
            wait_until(lambda: spooled_requests(gw.state) > 0, 20, "the ledger to spool during the outage")
            wait_until(lambda: load.ok >= down_at + 10, 20, "traffic during the outage")
            assert ledger(admin) is None  # the store is down: GET /usage answers 503
            wait_until(lambda: gauge(admin, "fastgw_ledger_spooled_rows") > 0, 10, "the spooled rows gauge")
        finally:
            postgres_server.start()
        up_at = load.ok
        wait_until(lambda: load.ok >= up_at + 6, 20, "traffic after the outage")
    assert load.failed == [], load.failed[:3]
    assert load.ok == len(fake.answers)
    totals = settled(admin, fake, RECOVERY_SECONDS)
    assert totals["requests"] == load.ok
    wait_until(lambda: spooled_requests(gw.state) == 0, 10, "the spool to be emptied")
    wait_until(lambda: gauge(admin, "fastgw_ledger_spooled_rows") == 0, 10, "the gauge back to 0")
    assert gauge(admin, "fastgw_ledger_dropped_rows") == 0
    err = gw.stderr()
    assert "USAGE LEDGER: the store cannot be written" in err and "spooled batches replayed" in err


def test_a_control_process_killed_with_rows_in_the_spool_loses_and_doubles_nothing(
    gateway_factory: Callable[..., Gateway],
    fake: FakeOpenAI,
    secrets_dir: Path,
    postgres_server: PostgresServer,
) -> None:
    gw, admin, keys = start(gateway_factory, fake, secrets_dir, postgres_server.create_database())
    for i in range(6):
        ask(gw.url, keys[i % 2], "mini", i)
    settled(admin, fake, 10)
    postgres_server.stop()
    try:
        for i in range(8):
            ask(gw.url, keys[i % 2], "house" if i % 4 == 3 else "mini", i)
        wait_until(lambda: spooled_requests(gw.state) == 8, 20, "the outage's requests in the spool")
        victim = gw.control_pid()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: gw.control_pid() != victim, 10, "the control process to be restarted")
        for i in range(4):  # the workers serve on and keep their sums for the control process's successor
            ask(gw.url, keys[i % 2], "mini", i)
        # Its successor cannot start while the database is down: the supervisor keeps restarting it.
        wait_until(lambda: "cannot start: cannot connect to PostgreSQL" in gw.stderr(), 10, "a failed start")
    finally:
        postgres_server.start()
    assert len(fake.answers) == 18
    totals = settled(admin, fake, RECOVERY_SECONDS)
    assert totals["requests"] == 18
    assert "by an earlier run: replaying them" in gw.stderr()
    wait_until(lambda: spooled_requests(gw.state) == 0, 10, "the spool to be emptied")
