"""Budget alert webhooks on their failure paths (docs/llm-budgets.md, "Alerts"), through a real gateway
with the built-in demo provider: a receiver that refuses is not retried, a dead one does not hold up the
others, a reload hands queued alerts to the new webhooks and secret, a stop delivers what is queued, and
what a killed or stopped worker could not deliver is kept in the state directory and delivered by the
next worker to start (before, the node's flag cell, which outlives a worker, said sent: it never was).
The happy path (signatures, once per period, retries of a 503, the audit log) is in test_llm_budgets."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.support.demo_llm import demo_llm_config
from tests.support.gateways import Gateway, start_gateway
from tests.support.llm_gateway import ADMIN_TOKEN, metric, scrape
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.support.webhooks import WebhookReceiver

SECRET = b"budget-alert-secret-3b9f0c1d"
OUTCOMES = ("delivered", "failed", "dropped")


def alerting(tmp_path: Path, webhooks: list[str], secret: bytes = SECRET, admin_port: int = 0) -> str:
    """A route with a budget of 1 token a day: the first request is refused and raises the 100 % alert
    (with ``admin_port``, the admin API there, its token ADMIN_TOKEN)."""
    (tmp_path / "alert.key").write_bytes(secret + b"\n")
    extra = ""
    if admin_port:
        (tmp_path / "admin.token").write_text(ADMIN_TOKEN + "\n")
        token = tmp_path / "admin.token"
        extra = f'[admin]\nbind = "127.0.0.1:{admin_port}"\ntoken = {{ file = "{token}" }}\n'

    urls = ", ".join(f'"{url}"' for url in webhooks)
    route = f"""
        auth = "none"

        [routes.handler.budget_alerts]
        thresholds = [100]
        webhooks = [{urls}]
        secret = {{ file = "{tmp_path / "alert.key"}" }}

        [[routes.handler.budgets]]
        name = "day-tokens"
        key = "route"
        tokens_per_day = 1
        """
    return demo_llm_config(free_port(), route=route, extra=extra)


def refused(gw: Gateway) -> None:
    with (
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key="any", max_retries=0) as client,
        pytest.raises(openai.RateLimitError),
    ):
        client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "hi"}])


def test_a_receiver_that_refuses_is_not_retried_and_a_dead_one_holds_up_no_other(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    refusing = WebhookReceiver(SECRET, fail_first=100, fail_status=401)
    healthy = WebhookReceiver(SECRET)
    dead = f"http://127.0.0.1:{free_port()}/hooks"  # nothing listens: tried for about a minute
    admin_port = free_port()
    try:
        gw = gateway_factory(alerting(tmp_path, [dead, refusing.url, healthy.url], admin_port=admin_port))
        raised = time.monotonic()
        refused(gw)
        wait_until(lambda: healthy.received, 5.0, "the alert at the healthy webhook")
        assert healthy.times[0] - raised < 3.0, "not behind the dead webhook's retries"
        [alert] = healthy.received
        assert alert["threshold"] == 100 and len(alert["id"]) > 16
        wait_until(lambda: "answered 401, not retried" in gw.stderr(), 5.0, "the refusal logged")
        time.sleep(2 * 0.5 + 1.0)  # past two backoffs: a retried refusal would have come back by now
        assert refusing.attempts == 1

        def outcomes() -> dict[str, float]:
            text = scrape(admin_port)
            return {o: metric(text, "fastgw_llm_budget_alerts_total", outcome=o) for o in OUTCOMES}

        # The dead webhook's alert is still being tried: neither failed nor dropped yet.
        wait_until(lambda: outcomes() == {"delivered": 1, "failed": 1, "dropped": 0}, 5.0, "the counts")
    finally:
        refusing.close()
        healthy.close()


def test_a_reload_hands_queued_alerts_to_the_new_webhook_and_secret(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    """Alerts waiting for a failing receiver were sent on to the old URL with the old secret after a
    reload changed both (docs said dropped): now they go to the new ones, signed with the new secret."""
    failing = WebhookReceiver(SECRET, fail_first=1000)
    rotated = b"the-new-secret-after-rotation-77"
    fresh = WebhookReceiver(rotated)
    try:
        gw = gateway_factory(alerting(tmp_path, [failing.url]))
        refused(gw)
        wait_until(lambda: failing.attempts >= 1, 5.0, "the alert tried at the failing webhook")
        gw.config.write_text(gw.config.read_text().replace(failing.url, fresh.url))
        (tmp_path / "alert.key").write_bytes(rotated + b"\n")
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload (SIGHUP) complete" in gw.stderr(), 10.0, "the reload")
        wait_until(lambda: fresh.received, 5.0, "the queued alert at the new webhook")
        assert fresh.bad_signatures == 0 and fresh.received[0]["threshold"] == 100
        tried = failing.attempts
        time.sleep(2.0)  # the old webhook's backoff would have tried again within this
        assert failing.attempts == tried, "the old config stopped delivering"
    finally:
        failing.close()
        fresh.close()


def test_a_stop_delivers_the_alerts_still_queued(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    """The queue lives in the worker: a stop that did not wait for it lost every alert still queued."""
    receiver = WebhookReceiver(SECRET, fail_first=2)  # answers on the third try, ~1.5 s later
    try:
        gw = gateway_factory(alerting(tmp_path, [receiver.url]))
        refused(gw)
        wait_until(lambda: receiver.attempts >= 1, 5.0, "the first try")
        assert gw.stop() == 0
        assert [a["threshold"] for a in receiver.received] == [100]
    finally:
        receiver.close()


def spooled(gw: Gateway) -> list[Path]:
    """The alert files in the gateway's spool (ai/alert_spool.py)."""
    return sorted((gw.state / "alerts").glob("worker-*/*.json"))


def test_a_worker_killed_with_its_alert_queued_leaves_it_to_the_next(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    receiver = WebhookReceiver(SECRET, fail_first=10**6)  # 503 until told otherwise: retried, kept
    try:
        gw = gateway_factory(alerting(tmp_path, [receiver.url]))
        refused(gw)
        wait_until(lambda: receiver.attempts >= 1, 5.0, "the alert tried at the failing webhook")
        assert len(spooled(gw)) == 1, "the queued alert is on disk"
        old = gw.worker_pid()
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: gw.worker_pid() != old, 10.0, "the supervisor to restart the worker")
        receiver.fail_first = receiver.attempts  # the receiver is back
        wait_until(lambda: receiver.received, 10.0, "the alert delivered by the new worker")
        [alert] = receiver.received
        assert alert["threshold"] == 100 and alert["route"] and receiver.bad_signatures == 0
        assert "1 budget alerts left by a previous worker queued again" in gw.stderr()
        wait_until(lambda: not spooled(gw), 5.0, "the delivered alert's file removed")
    finally:
        receiver.close()


def test_a_stop_while_the_receiver_is_down_leaves_the_alert_to_the_next_start(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there until the gateway has stopped
    receiver: WebhookReceiver | None = None
    body = alerting(tmp_path, [f"http://127.0.0.1:{port}/hooks/budget"])
    gw = start_gateway(tmp_path, body, name="spool")
    try:
        refused(gw)
        wait_until(lambda: spooled(gw), 5.0, "the alert kept on disk")
        assert gw.stop() == 0
        assert "budget alert deliveries not made at stop (kept for the next start)" in gw.stderr()
        assert len(spooled(gw)) == 1
        receiver = WebhookReceiver(SECRET, port=port)
        gw = start_gateway(tmp_path, body, name="spool")  # the same config and state directory
        wait_until(lambda: receiver is not None and receiver.received, 10.0, "the alert after the restart")
        assert [a["threshold"] for a in receiver.received] == [100]
        wait_until(lambda: not spooled(gw), 5.0, "its file removed")
    finally:
        code = gw.stop()
        if receiver is not None:
            receiver.close()
    assert code == 0, gw.stderr()
