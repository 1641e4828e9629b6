"""The admin API on its own listener: token, status, routes, reload, rollback, metrics; and the CLI helpers.

A real gateway (supervisor, control process, two workers); requests over real sockets with urllib.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.admin import TOKEN, Admin
from tests.support.cli import fastgw
from tests.support.clients import get
from tests.support.full_disk import no_space
from tests.support.gateways import Gateway
from tests.support.load import snapshot_id
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until


def test_token_is_required_and_checked(admin_gateway: tuple[Gateway, Admin]) -> None:
    gw, admin = admin_gateway
    for token in (None, "wrong", TOKEN + "x", ""):
        status, headers, body = admin.call("GET", "/status", token=token)
        assert status == 401, token
        assert headers["content-type"] == "application/problem+json"
        assert headers["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["status"] == 401
    assert admin.call("GET", "/healthz", token=None)[0] == 200
    # Never on the public listener: /status there is routed like any path (to the upstream).
    assert get(gw.port, "/status").status == 200
    assert TOKEN not in gw.stderr()


def test_status_routes_and_readiness(admin_gateway: tuple[Gateway, Admin]) -> None:
    gw, admin = admin_gateway
    status, body = admin.json("GET", "/status")
    assert status == 200
    assert len(body["workers"]) == 2 and {w["slot"] for w in body["workers"]} == {0, 1}
    assert body["snapshot"] == snapshot_id(gw.config.read_text())
    assert body["source"] == str(gw.config)
    assert body["uptime_s"] >= 0 and body["loaded_at"].endswith("Z")
    assert {w["pid"] for w in body["workers"]} == {gw.worker_pid(0), gw.worker_pid(1)}
    assert all(w["snapshot"] == body["snapshot"] for w in body["workers"])
    status, routes = admin.json("GET", "/routes")
    names = {r["name"]: r for r in routes["routes"]}
    assert set(names) == {"main", "blocked"}
    assert {"name": "route_network", "mode": "shadow"} in names["main"]["policies"]
    status, ready = admin.json("GET", "/readyz", token=None)
    assert (status, ready["ready"]) == (200, True)
    assert admin.call("POST", "/status")[0] == 405
    assert admin.call("GET", "/nope")[0] == 404


def test_reload_and_rollback_through_the_api(admin_gateway: tuple[Gateway, Admin]) -> None:
    gw, admin = admin_gateway
    _, before = admin.json("GET", "/status")
    original = gw.config.read_text()
    gw.config.write_text(original.replace('name = "blocked"', 'name = "blocked2"'))
    status, result = admin.json("POST", "/reload")
    assert status == 200 and result["previous"] == before["snapshot"] and result["confirmed"] is True
    new_id = result["snapshot"]
    _, after = admin.json("GET", "/status")
    assert after["snapshot"] == new_id and all(w["snapshot"] == new_id for w in after["workers"])
    _, routes = admin.json("GET", "/routes")
    assert "blocked2" in {r["name"] for r in routes["routes"]}
    # An invalid file: 422 problem naming file, key and reason; nothing changes.
    gw.config.write_text(original.replace('auth = "none"', 'auth = "maybe"', 1))
    status, headers, body = admin.call("POST", "/reload")
    assert status == 422 and headers["content-type"] == "application/problem+json"
    assert f"{gw.config}: routes[0].auth: invalid value 'maybe'" in json.loads(body)["detail"]
    assert admin.json("GET", "/status")[1]["snapshot"] == new_id
    # Rollback restores the previous valid config, which stays until the next explicit reload.
    status, result = admin.json("POST", "/rollback")
    assert status == 200 and result["snapshot"] == before["snapshot"]
    _, routes = admin.json("GET", "/routes")
    assert "blocked" in {r["name"] for r in routes["routes"]}
    assert get(gw.port, "/x").status == 200


def test_metrics_are_summed_across_workers(admin_gateway: tuple[Gateway, Admin]) -> None:
    gw, admin = admin_gateway
    for i in range(30):
        assert get(gw.port, f"/m/{i}").status == 200
    for _ in range(4):
        assert get(gw.port, "/blocked/x").status == 403
    status, headers, body = admin.call("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'fastgw_requests_total{code="2xx",method="GET",route="main"} 30.0' in text
    assert 'fastgw_requests_total{code="4xx",method="GET",route="blocked"} 4.0' in text
    assert 'fastgw_denials_total{policy="route_network",reason="deny",route="blocked"} 4.0' in text
    # the main route's network rule is in shadow mode: every request there was a would-denial
    assert 'fastgw_shadow_denials_total{policy="route_network",reason="deny",route="main"} 30.0' in text
    assert 'fastgw_request_duration_seconds_count{route="main"} 30.0' in text
    assert 'fastgw_upstream_connections{state="idle",target=' in text
    assert "fastgw_workers_connected 2.0" in text
    assert admin.call("GET", "/metrics", token=None)[0] == 401
    # Counters survive a worker's death (they live in shared memory, metrics/shared.py).
    os.kill(gw.worker_pid(0), signal.SIGKILL)
    wait_until(lambda: gw.stderr().count("serving again") >= 1, 5, "the replacement")
    text = admin.call("GET", "/metrics")[2].decode()
    assert 'fastgw_requests_total{code="2xx",method="GET",route="main"} 30.0' in text
    assert 'fastgw_child_restarts_total{child="worker 0"} 1.0' in text


def test_metrics_latency_histograms_place_each_request(
    admin_gateway: tuple[Gateway, Admin], upstream: TestUpstream
) -> None:
    gw, admin = admin_gateway
    upstream.delay = 0.012  # every answer takes more than the 0.01 s bound and (far) less than 2.5 s
    for i in range(6):
        assert get(gw.port, f"/h/{i}").status == 200

    def samples(family: str) -> dict[str, float]:
        text = admin.call("GET", "/metrics")[2].decode()
        prefix = family + '_bucket{le="'
        found = {}
        for line in text.splitlines():
            if line.startswith(prefix) and line.split("}")[0].endswith('route="main"'):
                found[line[len(prefix) :].split('"')[0]] = float(line.rsplit(" ", 1)[1])
            elif line.startswith(family + '_sum{route="main"}'):
                found["sum"] = float(line.rsplit(" ", 1)[1])
        return found

    for family in ("fastgw_request_duration_seconds", "fastgw_upstream_duration_seconds"):
        hist = samples(family)
        assert hist["0.01"] == 0.0 and hist["2.5"] == 6.0 and hist["+Inf"] == 6.0, (family, hist)
        assert 6 * 0.012 <= hist["sum"] < 6 * 2.5, (family, hist)


def test_audit_log_records_admin_actions_and_verifies(
    admin_gateway: tuple[Gateway, Admin], tmp_path: Path
) -> None:
    gw, admin = admin_gateway
    admin.call("POST", "/reload")
    admin.call("POST", "/rollback")
    records = [json.loads(line) for line in (gw.state / "audit.log").read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events[0] == "start"
    assert events[1:] == ["admin.reload", "reload", "admin.rollback", "rollback"]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert all(len(r["mac"]) == 64 for r in records)
    assert TOKEN not in (gw.state / "audit.log").read_text()
    out = subprocess.run(
        [sys.executable, "-m", "fastgw", "audit", "verify", "--config", str(gw.config)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "STATE_DIRECTORY": str(gw.state)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"OK, {len(records)} records, matches the store's anchor (seq {len(records)})" in out.stdout


def test_admin_action_that_cannot_be_audited_is_refused(admin_gateway: tuple[Gateway, Admin]) -> None:
    gw, admin = admin_gateway
    audit = gw.state / "audit.log"
    audit.unlink()
    audit.mkdir()  # writes now fail (even for root, which file modes would not stop)
    assert "the audit log cannot be written" in refused_reload(gw, admin)


def refused_reload(gw: Gateway, admin: Admin) -> str:
    """POST /reload of a changed config, refused (503 audit-unavailable) with the running config kept:
    the problem's detail."""
    _, before = admin.json("GET", "/status")
    gw.config.write_text(gw.config.read_text().replace('name = "blocked"', 'name = "blocked3"'))
    status, headers, body = admin.call("POST", "/reload")
    problem = json.loads(body)
    assert (status, headers["content-type"]) == (503, "application/problem+json")
    assert problem["type"] == "https://fastgw.dev/problems/audit-unavailable"
    assert admin.json("GET", "/status")[1]["snapshot"] == before["snapshot"]
    return str(problem["detail"])


def test_an_admin_reload_on_a_full_disk_is_refused_naming_the_file(
    admin_gateway: tuple[Gateway, Admin],
) -> None:
    """The audit log takes no write (ENOSPC): the answer and the control process's log name the file and
    the system's words; the reload is not asked for, and nothing says a record was written."""
    gw, admin = admin_gateway
    audit = gw.state / "audit.log"
    with no_space(audit):
        detail = refused_reload(gw, admin)
    assert detail == (
        f"the audit log cannot be written: {audit}: No space left on device; the reload is refused, the"
        " running config stays"
    )
    assert (
        f"AUDIT WRITE FAILED (admin.reload): {audit}: No space left on device; not recorded, admin.reload is"
        " refused" in gw.stderr()
    )
    assert [json.loads(line)["event"] for line in audit.read_text().splitlines()] == ["start"]


def test_an_admin_reload_whose_audit_anchor_the_store_refuses_is_refused_and_answered(
    admin_gateway: tuple[Gateway, Admin],
) -> None:
    """The record is written, the store will not move its anchor (a trigger, as a full disk refuses
    SQLite's write): 503 audit-unavailable naming the store, not store-unavailable; the record is answered
    by admin.reload.aborted, the log says which record is in the file, and the log still verifies."""
    gw, admin = admin_gateway
    audit, db = gw.state / "audit.log", gw.state / "fastgw.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON audit_anchor BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.commit()
    assert refused_reload(gw, admin) == (
        f"the audit log's anchor cannot be moved: {db}: refused; the reload is refused, the running"
        " config stays"
    )
    start, reload, aborted = [json.loads(line) for line in audit.read_text().splitlines()]
    assert (reload["event"], aborted["event"]) == ("admin.reload", "admin.reload.aborted")
    assert (aborted["original_seq"], aborted["reason"]) == (reload["seq"], "AuditAnchorError")
    assert (
        f"AUDIT ANCHOR NOT MOVED (admin.reload, seq {reload['seq']}): {db}: refused; the record is in {audit}"
        in (gw.stderr())
    )
    assert "AUDIT WRITE FAILED" not in gw.stderr() and "Traceback" not in gw.stderr()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TRIGGER refuse")
        conn.commit()
    verify = fastgw("audit", "verify", "--config", str(gw.config), env={"STATE_DIRECTORY": str(gw.state)})
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"OK, 3 records, matches the store's anchor (seq {start['seq']})" in verify.stdout
    assert admin.json("POST", "/reload")[0] == 200  # the store takes writes again


def test_changing_the_admin_listener_restarts_the_control_process(
    admin_gateway: tuple[Gateway, Admin],
) -> None:
    gw, admin = admin_gateway
    control = gw.control_pid()
    new_port = free_port()
    gw.config.write_text(gw.config.read_text().replace(f"127.0.0.1:{admin.port}", f"127.0.0.1:{new_port}"))
    status, _ = admin.json("POST", "/reload")
    assert status == 200
    wait_until(lambda: gw.control_pid() != control, 5, "a new control process")
    moved = Admin(new_port)
    assert wait_until(lambda: _status_ok(moved), 5, "the admin API on its new port")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{admin.port}/healthz", timeout=2)


def _status_ok(admin: Admin) -> bool:
    try:
        return admin.call("GET", "/status")[0] == 200
    except OSError:
        return False


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_every_admin_field_is_human_readable(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, secrets_dir: Path
) -> None:
    """Times are ISO 8601 UTC, quota periods are named with their start and end: never the raw unix
    seconds or the negative period codes the store keeps."""
    from tests.support.rate_limits import limited_config

    port = free_port()
    config = limited_config(
        upstream.port,
        '{ name = "daily", rate = 5, quota = "day", key = "ip" }, '
        '{ name = "monthly", rate = 50, quota = "month", key = "ip" }',
        extra=f"""
        [rate_limits]
        quota_flush = 0.2

        [admin]
        bind = "127.0.0.1:{port}"
        token = {{ file = "{secrets_dir / "admin.token"}" }}

        [keys]
        pepper = {{ file = "{secrets_dir / "pepper"}" }}
        """,
    )
    gw = gateway_factory(config)
    admin = Admin(port)
    token = (secrets_dir / "admin.token").read_text().strip()
    now = time.time()  # the request's period (if the day turns during the test, the test looks again)
    assert get(gw.port, "/limited/a").status == 200
    quotas = wait_until(
        lambda: (q := admin.json("GET", "/quotas", token=token)[1]["quotas"]) and len(q) == 2 and q,
        5,
        "both quota counts in the store",
    )
    if int(now // 86400) != int(time.time() // 86400):
        pytest.skip("the UTC day turned during the test")
    day_start = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now))
    day_end = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now - now % 86400 + 86400))
    t = time.gmtime(now)
    month_start = time.strftime("%Y-%m-01T00:00:00Z", t)
    month_end = f"{t.tm_year + t.tm_mon // 12:04d}-{t.tm_mon % 12 + 1:02d}-01T00:00:00Z"
    by_period = {q["period"]: q for q in quotas}
    assert set(by_period) == {"day", "month"}, quotas
    assert (by_period["day"]["period_start"], by_period["day"]["period_end"]) == (day_start, day_end)
    assert (by_period["month"]["period_start"], by_period["month"]["period_end"]) == (month_start, month_end)
    assert all(ISO.fullmatch(q["updated"]) and q["count"] == 1 for q in quotas), quotas
    create = urllib.request.Request(
        f"http://127.0.0.1:{port}/consumers",
        method="POST",
        data=json.dumps({"name": "acme"}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(create, timeout=15) as resp:
        created = json.loads(resp.read())
    assert ISO.fullmatch(created["created"]), created
    assert admin.json("GET", "/consumers", token=token)[1]["consumers"][0]["created"] == created["created"]
    key = urllib.request.Request(
        f"http://127.0.0.1:{port}/keys",
        method="POST",
        data=json.dumps({"consumer": "acme", "expires_in": 3600}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(key, timeout=15) as resp:
        issued = json.loads(resp.read())
    assert ISO.fullmatch(issued["created"]) and ISO.fullmatch(issued["expires"]), issued
    assert issued["revoked"] is None
    _, keys = admin.json("GET", "/keys", token=token)
    assert [(k["id"], k["expires"]) for k in keys["keys"]] == [(issued["id"], issued["expires"])]
