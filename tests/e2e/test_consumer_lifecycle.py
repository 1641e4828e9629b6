"""Key expiry rules and the consumer lifecycle, end to end: CLI -> admin API -> store -> every worker.

Real gateway (supervisor, control process, 2 workers). Each change reaches every worker by the same push
as a revocation; "every worker within 1 s" is polled with a 1 s deadline on fresh connections (so both
workers answer some of them).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastgw.control.admin_client import admin_call
from fastgw.store.base import Consumer
from fastgw.store.sqlite import SQLiteStore
from tests.support.api_keys import cli, issue, keys_config, status_on_all_workers
from tests.support.cli import fastgw
from tests.support.gateways import Gateway
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until


@pytest.fixture
def keyed(gateway_factory: Callable[..., Gateway], upstream: TestUpstream, secrets_dir: Path) -> Gateway:
    return gateway_factory(keys_config(upstream.port, free_port(), secrets_dir), workers=2)


def fails(gw: Gateway, *args: str) -> str:
    """The one stderr line of a CLI command the gateway refused (exit 1)."""
    out = fastgw(*args, "--config", str(gw.config))
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    return out.stderr


def key_row(gw: Gateway, key_id: str) -> dict[str, object]:
    rows = json.loads(cli(gw, "keys", "list", "--json"))["keys"]
    return next(r for r in rows if r["id"] == key_id)  # type: ignore[no-any-return]


def admin(gw: Gateway, method: str, path: str, body: dict[str, object] | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    from fastgw.cli.config_files import compile_for_tools

    return admin_call(compile_for_tools(str(gw.config)).admin, method, path, body)


def audit_events(gw: Gateway) -> list[dict[str, object]]:
    return [json.loads(line) for line in (gw.state / "audit.log").read_text().splitlines()]


def test_expiry_only_moves_earlier_and_an_expired_key_stays_expired(keyed: Gateway) -> None:
    gw = keyed
    key, key_id = issue(gw, "acme", "--expires-in", "3600")
    header = f"X-API-Key: {key}\r\n"
    wait_until(lambda: status_on_all_workers(gw.port, "/api/x", header) == {200}, 5, "the key")
    before = key_row(gw, key_id)["expires"]
    # Later without --extend: refused, and nothing changes.
    assert "expiry only moves earlier" in fails(gw, "keys", "expire", key_id, "--in", "100000")
    assert key_row(gw, key_id)["expires"] == before
    # With --extend, an active key may move later; earlier needs nothing.
    assert "expires" in cli(gw, "keys", "expire", key_id, "--in", "100000", "--extend")
    assert key_row(gw, key_id)["expires"] != before
    cli(gw, "keys", "expire", key_id, "--in", "60")
    # --in 0 (the default) means now: every worker refuses it within a second.
    cli(gw, "keys", "expire", key_id)
    wait_until(lambda: status_on_all_workers(gw.port, "/api/x", header) == {401}, 1.0, "the expiry")
    # The old footgun: an expired key revived by a later expiry. Refused with and without --extend.
    assert "expiry only moves earlier" in fails(gw, "keys", "expire", key_id, "--in", "100000")
    assert "has expired and stays expired" in fails(gw, "keys", "expire", key_id, "--in", "100", "--extend")
    assert status_on_all_workers(gw.port, "/api/x", header) == {401}
    assert key_row(gw, key_id)["state"] == "expired"


def test_a_rotated_out_key_cannot_be_revived_and_is_rotated_once(keyed: Gateway) -> None:
    gw = keyed
    key, key_id = issue(gw)
    out = cli(gw, "keys", "rotate", key_id, "--grace", "4")
    successor = re.search(r"key (k_\w+)", out)
    assert successor
    # While the successor is live, a second rotation of the old key is refused (rotate the successor).
    assert "already rotated to" in fails(gw, "keys", "rotate", key_id)
    header = f"X-API-Key: {key}\r\n"
    wait_until(lambda: status_on_all_workers(gw.port, "/api/x", header) == {401}, 10, "the grace end")
    assert "expiry only moves earlier" in fails(gw, "keys", "expire", key_id, "--in", "100000")
    assert "stays expired" in fails(gw, "keys", "expire", key_id, "--in", "100000", "--extend")
    assert "has expired" in fails(gw, "keys", "rotate", key_id)
    assert status_on_all_workers(gw.port, "/api/x", header) == {401}
    # A rotated-out key still in its grace period may end it earlier, but not be extended.
    key2, key2_id = issue(gw)
    cli(gw, "keys", "rotate", key2_id, "--grace", "600")
    assert "rotated out" in fails(gw, "keys", "expire", key2_id, "--in", "6000", "--extend")
    cli(gw, "keys", "expire", key2_id)
    wait_until(
        lambda: status_on_all_workers(gw.port, "/api/x", f"X-API-Key: {key2}\r\n") == {401}, 1.0, "grace end"
    )


def test_zero_and_nonsense_lifetimes_are_refused(keyed: Gateway) -> None:
    gw = keyed
    cli(gw, "consumers", "create", "acme")
    assert "expires_in must be a number of seconds > 0" in fails(
        gw, "keys", "create", "acme", "--expires-in", "0"
    )
    assert "expires_in" in fails(gw, "keys", "create", "acme", "--expires-in", "-5")
    for bad in (1e300, True, "10", 0, -1):  # (JSON has no NaN or infinity)
        status, body = admin(gw, "POST", "/keys", {"consumer": "acme", "expires_in": bad})  # type: ignore[arg-type]
        assert status == 422, (bad, status, body)
    _, key_id = issue(gw, "acme")
    for body in ({"at": 1e300}, {"in": -1}, {"at": 1, "in": 1}, {"extend": "yes"}):
        status, answer = admin(gw, "POST", f"/keys/{key_id}/expire", body)
        assert status == 422, (body, status, answer)
    status, _ = admin(gw, "POST", f"/keys/{key_id}/rotate", {"grace_seconds": -1})
    assert status == 422
    assert json.loads(cli(gw, "keys", "list", "--json"))["keys"][0]["expires"] is None  # never, unchanged


def test_a_route_that_does_not_exist_is_refused(keyed: Gateway) -> None:
    gw = keyed
    cli(gw, "consumers", "create", "acme")
    err = fails(gw, "keys", "create", "acme", "--route", "reprots")
    assert "no route named 'reprots'" in err and "reports" in err
    assert json.loads(cli(gw, "keys", "list", "--json"))["keys"] == []
    _, key_id = issue(gw, "acme", "--route", "reports")
    assert "no route named 'nope'" in fails(gw, "keys", "update", key_id, "--route", "nope")


def test_key_scopes_roles_and_routes_change_in_place_on_every_worker(keyed: Gateway) -> None:
    gw = keyed
    key, key_id = issue(gw, "acme", "--route", "reports")
    header = f"X-API-Key: {key}\r\n"
    wait_until(lambda: status_on_all_workers(gw.port, "/reports/q", header) == {200}, 5, "the key")
    assert status_on_all_workers(gw.port, "/api/x", header) == {403}
    changed = time.monotonic()
    cli(gw, "keys", "update", key_id, "--route", "api")
    wait_until(
        lambda: (
            status_on_all_workers(gw.port, "/api/x", header) == {200}
            and status_on_all_workers(gw.port, "/reports/q", header) == {403}
        ),
        1.0,
        "the new routes on every worker",
    )
    print(f"\nroutes change on every worker {1000 * (time.monotonic() - changed):.0f} ms after the CLI")
    cli(gw, "keys", "update", key_id, "--all-routes", "--scope", "orders:read", "--role", "auditor")
    row = key_row(gw, key_id)
    assert (row["routes"], row["scopes"], row["roles"]) == (None, ["orders:read"], ["auditor"])
    wait_until(lambda: status_on_all_workers(gw.port, "/reports/q", header) == {200}, 1.0, "every route")
    assert "nothing to change" in fails(gw, "keys", "update", key_id, "--scope", "orders:read")
    update = [e for e in audit_events(gw) if e["event"] == "key.update"]
    assert len(update) == 2 and update[0]["before"] == {"routes": ["reports"]}
    assert update[0]["after"] == {"routes": ["api"]}
    cli(gw, "keys", "revoke", key_id)
    assert "is revoked" in fails(gw, "keys", "update", key_id, "--no-scopes")


def test_disable_enable_delete_a_consumer_on_every_worker_within_a_second(keyed: Gateway) -> None:
    gw = keyed
    key1, key1_id = issue(gw, "acme")
    key2, key2_id = issue(gw, "acme", "--route", "reports")
    other, _ = issue(gw, "globex")
    h1, h2, h3 = (f"X-API-Key: {k}\r\n" for k in (key1, key2, other))
    wait_until(
        lambda: (
            status_on_all_workers(gw.port, "/reports/x", h1 + "") == {200}
            and status_on_all_workers(gw.port, "/reports/x", h2) == {200}
            and status_on_all_workers(gw.port, "/reports/x", h3) == {200}
        ),
        5,
        "the keys",
    )
    shown = cli(gw, "consumers", "show", "acme")
    assert "consumer acme (c_" in shown and ": enabled" in shown and "keys (2):" in shown
    assert key1_id in shown and key2_id in shown
    listed = cli(gw, "keys", "list", "--consumer", "acme")
    assert key1_id in listed and key2_id in listed and "globex" not in listed

    disabled_at = time.monotonic()
    assert "disabled" in cli(gw, "consumers", "disable", "acme")
    wait_until(
        lambda: (
            status_on_all_workers(gw.port, "/reports/x", h1) == {401}
            and status_on_all_workers(gw.port, "/reports/x", h2) == {401}
        ),
        1.0,
        "the disabled consumer's keys on every worker",
    )
    print(f"\ndisable visible on every worker {1000 * (time.monotonic() - disabled_at):.0f} ms after the CLI")
    assert status_on_all_workers(gw.port, "/reports/x", h3) == {200}  # another consumer: untouched
    assert "  disabled" in cli(gw, "keys", "list", "--consumer", "acme")
    assert "is disabled" in fails(gw, "keys", "create", "acme")
    # A worker that connects after the change gets a table without them (kill one: it is restarted).
    old_pid = gw.worker_pid(0)
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: gw.worker_pid(0) != old_pid, 10, "the restarted worker")
    wait_until(lambda: status_on_all_workers(gw.port, "/reports/x", h3) == {200}, 10, "both workers serve")
    assert status_on_all_workers(gw.port, "/reports/x", h1, n=20) == {401}

    assert "enabled" in cli(gw, "consumers", "enable", "acme")
    wait_until(
        lambda: (
            status_on_all_workers(gw.port, "/reports/x", h1) == {200}
            and status_on_all_workers(gw.port, "/reports/x", h2) == {200}
        ),
        1.0,
        "the enabled consumer's keys on every worker",
    )
    deleted_at = time.monotonic()
    assert "deleted consumer acme" in cli(gw, "consumers", "delete", "acme")
    wait_until(
        lambda: (
            status_on_all_workers(gw.port, "/reports/x", h1) == {401}
            and status_on_all_workers(gw.port, "/reports/x", h2) == {401}
        ),
        1.0,
        "the deleted consumer's keys on every worker",
    )
    print(f"delete visible on every worker {1000 * (time.monotonic() - deleted_at):.0f} ms after the CLI")
    assert "no consumer 'acme'" in fails(gw, "consumers", "show", "acme")
    assert key1_id not in cli(gw, "keys", "list")
    # The audit log keeps the whole history: creation, keys, disable, enable, delete (with key ids).
    events = audit_events(gw)
    names = [e["event"] for e in events]
    for event in ("consumer.disable", "consumer.enable", "consumer.delete"):
        assert event in names, event
    delete = next(e for e in events if e["event"] == "consumer.delete")
    assert delete["name"] == "acme" and set(delete["keys"]) == {key1_id, key2_id}  # type: ignore[arg-type]
    assert any(e["event"] == "key.create" and e["key"] == key1_id for e in events)
    # The name is free again.
    cli(gw, "consumers", "create", "acme")
    assert status_on_all_workers(gw.port, "/reports/x", h1) == {401}


def test_a_database_from_before_the_lifecycle_columns_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "fastgw.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE consumers (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
        " team TEXT NOT NULL, roles TEXT NOT NULL, metadata TEXT NOT NULL, created REAL NOT NULL)"
    )
    db.execute("INSERT INTO consumers VALUES ('c_1', 'acme', '', '[]', '{}', 1.0)")
    db.commit()
    db.close()
    store = SQLiteStore(str(path))
    try:
        assert store.consumers() == [
            Consumer(id="c_1", name="acme", team="", roles=(), metadata={}, created=1.0, disabled=None)
        ]
        store.set_consumer_disabled("c_1", 5.0)
        acme = store.consumer("acme")
        assert acme is not None and acme.disabled == 5.0
    finally:
        store.close()
    SQLiteStore(str(path)).close()  # opening it again adds nothing twice
