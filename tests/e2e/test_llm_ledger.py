"""The usage ledger end to end: a real gateway (2 workers) in front of the fake OpenAI provider, the
official OpenAI SDK as the client, streaming and not, two consumers, a priced and an unpriced model. The
ledger's totals (``GET /usage``, ``fastgw usage``) equal what the fake provider served, exactly; unknown
prices show as unknown, never 0; a worker killed -9 loses at most one flush interval of its traffic."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from fastgw.sinks.ledger import FLUSH_SECONDS
from tests.support.admin import Admin
from tests.support.api_keys import issue
from tests.support.cli import fastgw
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateways import Gateway
from tests.support.ledger import ledger_config, mini_cost_usd, served, start_fake
from tests.support.ports import free_port
from tests.support.waiting import wait_until

ADMIN_TOKEN = "admin-token-for-keys-tests-0c5e9a7d31f4"  # what the secrets_dir fixture writes


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = start_fake()
    yield server
    server.stop_thread()


@pytest.fixture
def ledgered(
    gateway_factory: Callable[..., Gateway], fake: FakeOpenAI, secrets_dir: Path
) -> tuple[Gateway, Admin]:
    admin_port = free_port()
    gw = gateway_factory(ledger_config(fake.port, admin_port, secrets_dir), workers=2)
    return gw, Admin(admin_port)


def one_request(gw: Gateway, key: str, model: str, i: int) -> None:
    """One request on a client of its own (a new connection, so both workers serve some): every third
    whole, the others streamed."""
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=10) as sdk:
        _one_request(sdk, model, i)


def _one_request(sdk: openai.OpenAI, model: str, i: int) -> None:
    words = " ".join(["word"] * (1 + i % 7))
    messages: Any = [{"role": "user", "content": words}]
    if i % 3 == 0:
        sdk.chat.completions.create(model=model, messages=messages)
    else:
        # Streamed: with the usage chunk asked for, or not (the gateway asks the provider for it anyway).
        options: Any = {"include_usage": True} if i % 3 == 1 else openai.NOT_GIVEN
        with sdk.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options=options
        ) as stream:
            for _ in stream:
                pass


def usage_rows(admin: Admin, query: str = "") -> list[dict[str, Any]]:
    status, body = admin.json("GET", f"/usage{query}", token=ADMIN_TOKEN)
    assert status == 200, body
    rows: list[dict[str, Any]] = body["usage"]
    return rows


def test_ledger_totals_equal_what_the_provider_served(
    ledgered: tuple[Gateway, Admin], fake: FakeOpenAI
) -> None:
    gw, admin = ledgered
    acme, _ = issue(gw, "acme")  # team payments
    zeta, _ = issue(gw, "zeta")
    sent = 0
    for key, count in ((acme, 24), (zeta, 12)):
        for i in range(count):
            one_request(gw, key, "house" if i % 4 == 3 else "mini", i)
            sent += 1
    assert len(fake.answers) == sent
    truth = served(fake)

    def settled() -> list[dict[str, Any]] | None:
        rows = usage_rows(admin, "?group_by=model")
        return rows if sum(r["requests"] for r in rows) == sent else None

    by_model = {
        r["model"]: r for r in wait_until(settled, FLUSH_SECONDS * 4, "the ledger to hold every request")
    }
    for model, provider_model in (("mini", "gpt-4o-mini"), ("house", "house-model")):
        row, sums = by_model[model], truth[provider_model]
        assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (
            sums["requests"],
            sums["prompt_tokens"],
            sums["completion_tokens"],
        ), (model, row, sums)
        assert row["total_tokens"] == sums["prompt_tokens"] + sums["completion_tokens"]
        assert row["errors"] == 0
    assert by_model["mini"]["cost_usd"] == pytest.approx(mini_cost_usd(fake), abs=1e-9)
    assert by_model["mini"]["unpriced_requests"] == 0
    # No price: the cost is unknown, never 0, and the requests are counted as unpriced.
    assert by_model["house"]["cost_usd"] is None
    assert by_model["house"]["unpriced_requests"] == truth["house-model"]["requests"]

    by_consumer = {r["consumer"]: r for r in usage_rows(admin, "?group_by=consumer,team")}
    assert by_consumer["acme"]["requests"] == 24 and by_consumer["acme"]["team"] == "payments"
    assert by_consumer["zeta"]["requests"] == 12
    assert usage_rows(admin, "?consumer=zeta&model=mini")[0]["requests"] == 9
    status, problem = admin.json("GET", "/usage?group_by=colour", token=ADMIN_TOKEN)
    assert status == 400 and "group_by: 'colour' is not one of" in json.dumps(problem)

    # Prometheus: tokens and cost by consumer and model (two consumers: both get series of their own;
    # what a worker counted before a consumer had its series is in "(other)"), nothing lost.
    status, _, body = admin.call("GET", "/metrics", token=ADMIN_TOKEN)
    assert status == 200
    prompt = completion = cost = 0.0
    consumers = set()
    for line in body.decode().splitlines():
        match = re.match(r"fastgw_llm_consumer_(tokens|cost_usd)_total\{(.*)\} (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            consumers.add(labels["consumer"])
            value = float(match.group(3))
            if match.group(1) == "cost_usd":
                cost += value
            elif labels["kind"] == "prompt":
                prompt += value
            else:
                completion += value
    assert {"acme", "zeta"} <= consumers <= {"acme", "zeta", "(other)"}
    assert prompt == sum(t["prompt_tokens"] for t in truth.values())
    assert completion == sum(t["completion_tokens"] for t in truth.values())
    assert cost == pytest.approx(mini_cost_usd(fake), abs=1e-9)

    # The CLI reads the same store.
    out = fastgw(
        "usage", "--config", str(gw.config), "--group-by", "consumer", "--format", "json", env=_env(gw)
    )
    assert out.returncode == 0, out.stderr
    assert {r["consumer"]: r["requests"] for r in json.loads(out.stdout)} == {"acme": 24, "zeta": 12}
    table = fastgw("usage", "--config", str(gw.config), "--group-by", "model", env=_env(gw))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "model",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "unpriced_requests",
        "errors",
    ]
    assert any(line.startswith("house") and " unknown " in line for line in lines)
    csv_out = fastgw("usage", "--config", str(gw.config), "--model", "house", "--format", "csv", env=_env(gw))
    header, row = csv_out.stdout.splitlines()
    assert dict(zip(header.split(","), row.split(","), strict=True))["cost_usd"] == ""


def test_graceful_stop_flushes_what_the_interval_had_not(
    ledgered: tuple[Gateway, Admin], fake: FakeOpenAI
) -> None:
    gw, _ = ledgered
    acme, _ = issue(gw, "acme")
    for i in range(10):
        one_request(gw, acme, "mini", i)
    assert gw.stop() == 0  # sooner than a flush interval: the shutdown hands the sums on
    out = fastgw("usage", "--config", str(gw.config), "--format", "json", env=_env(gw))
    assert out.returncode == 0, out.stderr
    [total] = json.loads(out.stdout)
    assert total["requests"] == 10 and total["prompt_tokens"] == served(fake)["gpt-4o-mini"]["prompt_tokens"]


def test_a_worker_killed_9_loses_at_most_one_flush_interval(
    ledgered: tuple[Gateway, Admin], fake: FakeOpenAI
) -> None:
    gw, _admin = ledgered
    acme, _ = issue(gw, "acme")
    completions: list[float] = []
    failures: list[float] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            try:
                one_request(gw, acme, "mini", i)
                completions.append(time.monotonic())
            except openai.APIError:
                failures.append(time.monotonic())  # cut off by the kill (or refused while it restarts)
            i += 1

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(completions) >= 40, 20, "traffic before the kill")
        victim = gw.worker_pid(0)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: gw.worker_pid(0) != victim, 10, "the worker to be replaced")
        after = len(completions)
        wait_until(lambda: len(completions) >= after + 40, 20, "traffic after the kill")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert gw.stop() == 0
    truth = served(fake)["gpt-4o-mini"]
    out = fastgw("usage", "--config", str(gw.config), "--format", "json", env=_env(gw))
    assert out.returncode == 0, out.stderr
    [ledger] = json.loads(out.stdout)
    lost = truth["requests"] - ledger["requests"]
    # What one interval can hold: every request completed in the flush interval (and a tick of records
    # not yet handed to the sinks) before the kill, by any worker, plus those cut off in flight.
    window = FLUSH_SECONDS + 0.2
    bound = sum(1 for t in completions if killed_at - window <= t <= killed_at) + len(failures)
    assert 0 <= lost <= bound, (lost, bound, truth, ledger)
    assert ledger["prompt_tokens"] <= truth["prompt_tokens"]
    assert ledger["completion_tokens"] <= truth["completion_tokens"]


def _env(gw: Gateway) -> dict[str, str]:
    return {"STATE_DIRECTORY": str(gw.state)}
