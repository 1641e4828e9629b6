"""The usage ledger end to end: a real gateway (2 workers) in front of the fake OpenAI provider, the
official OpenAI SDK as the client, streaming and not, two consumers, a priced and an unpriced model. The
ledger's totals (``GET /usage``, ``fastgw usage``) equal what the fake provider served, exactly; unknown
prices show as unknown, never 0; a worker killed -9 loses at most one flush interval of its traffic."""

from __future__ import annotations

import contextlib
import json
import math
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

from fastgw.sinks.ledger_book import FLUSH_SECONDS
from tests.support.admin import Admin
from tests.support.api_keys import issue
from tests.support.cli import fastgw
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateways import Gateway, start_gateway
from tests.support.ledger import ledger_config, mini_cost_usd, served, start_fake
from tests.support.ports import free_port
from tests.support.waiting import wait_until

QUICKSTART = Path(__file__).resolve().parents[2] / "fastgw" / "data" / "quickstart.toml"
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


class Load:
    """Requests from three client threads until stopped, each completion and failure timed."""

    def __init__(self, gw: Gateway, key: str) -> None:
        self.completions: list[float] = []
        self.failures: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(gw, key)) for _ in range(3)]
        for thread in self._threads:
            thread.start()

    def _run(self, gw: Gateway, key: str) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                one_request(gw, key, "mini", i)
                self.completions.append(time.monotonic())
            except openai.APIError:
                self.failures.append(time.monotonic())  # cut off by a kill (or refused meanwhile)
            i += 1

    def wait_for(self, more: int) -> None:
        target = len(self.completions) + more
        wait_until(lambda: len(self.completions) >= target, 20, f"{more} more requests")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def completed_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.completions if start <= t <= end)


def ledger_after_stop(gw: Gateway) -> dict[str, Any]:
    assert gw.stop() == 0
    out = fastgw("usage", "--config", str(gw.config), "--format", "json", env=_env(gw))
    assert out.returncode == 0, out.stderr
    [total] = json.loads(out.stdout)
    return dict(total)


def test_a_worker_killed_9_loses_at_most_one_flush_interval(
    ledgered: tuple[Gateway, Admin], fake: FakeOpenAI
) -> None:
    gw, _admin = ledgered
    acme, _ = issue(gw, "acme")
    load = Load(gw, acme)
    try:
        load.wait_for(40)
        victim = gw.worker_pid(0)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: gw.worker_pid(0) != victim, 10, "the worker to be replaced")
        load.wait_for(40)
    finally:
        load.stop()
    truth = served(fake)["gpt-4o-mini"]
    ledger = ledger_after_stop(gw)
    lost = truth["requests"] - ledger["requests"]
    # What one interval can hold: every request completed in the flush interval (and a tick of records
    # not yet handed to the sinks) before the kill, by any worker, plus those cut off in flight.
    bound = load.completed_between(killed_at - FLUSH_SECONDS - 0.2, killed_at) + len(load.failures)
    assert 0 <= lost <= bound, (lost, bound, truth, ledger)
    assert ledger["prompt_tokens"] <= truth["prompt_tokens"]
    assert ledger["completion_tokens"] <= truth["completion_tokens"]


def test_a_control_process_killed_9_loses_and_doubles_nothing(
    ledgered: tuple[Gateway, Admin], fake: FakeOpenAI
) -> None:
    """A worker keeps each ledger report until the control process acknowledges it (written or spooled)
    and sends the rest again to its successor, which adds a batch number once: a control process that
    dies with reports unread, read and unwritten, or written and unacknowledged loses and doubles
    nothing. It is stopped (SIGSTOP) for longer than a flush interval first, so every worker's report of
    that interval is sent to it and never read; then killed -9. Traffic is served throughout."""
    gw, _admin = ledgered
    acme, _ = issue(gw, "acme")
    load = Load(gw, acme)
    try:
        load.wait_for(30)
        victim = gw.control_pid()
        os.kill(victim, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_until(
            lambda: load.completed_between(stopped_at + FLUSH_SECONDS + 0.5, math.inf) >= 5,
            20,
            "a flush interval of traffic while the control process is stopped",
        )
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: gw.control_pid() != victim, 10, "the control process to be replaced")
        load.wait_for(30)
    finally:
        load.stop()
    truth = served(fake)["gpt-4o-mini"]
    ledger = ledger_after_stop(gw)
    assert load.failures == []
    assert (ledger["requests"], ledger["prompt_tokens"], ledger["completion_tokens"]) == (
        truth["requests"],
        truth["prompt_tokens"],
        truth["completion_tokens"],
    ), gw.stderr()


def test_a_stop_with_no_control_process_to_take_the_reports_keeps_them_for_the_next_start(
    ledgered: tuple[Gateway, Admin], fake: FakeOpenAI, tmp_path: Path
) -> None:
    """A worker stopping while its control process did not answer (PostgreSQL down at its start, a
    control process restarting; here stopped with SIGSTOP) waited a second for acknowledgements, then
    exited with its unacknowledged reports and its book: their usage was gone, without a line. And a
    control process stopped moments after its start died of the SIGTERM before replaying what it had
    taken, so ``fastgw usage`` missed it until the start after (found by CI)."""
    gw, _admin = ledgered
    acme, _ = issue(gw, "acme")
    for i in range(6):
        one_request(gw, acme, "mini", i)
    control = gw.control_pid()
    os.kill(control, signal.SIGSTOP)
    try:
        for i in range(6, 12):
            one_request(gw, acme, "mini", i)
        time.sleep(FLUSH_SECONDS + 0.2)  # a report sent and never read, and a book not yet sent
        one_request(gw, acme, "mini", 12)
        gw.proc.send_signal(signal.SIGTERM)
        # Both workers gone (the supervisor may kill the stopped control process after its grace):
        # a worker whose every report was acknowledged before the SIGSTOP keeps nothing, so one file or
        # two; the totals below say whether anything was lost.
        exited = re.compile(r"worker \d \(pid \d+\) exited")
        wait_until(lambda: len(exited.findall(gw.stderr())) == 2, 15, "both workers to stop")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(control, signal.SIGKILL)
    assert gw.proc.wait(15) == 0, gw.stderr()
    left = gw.state / "ledger-worker-*.jsonl"

    assert list(gw.state.glob(left.name)), gw.stderr()
    first = gw.stderr()  # the next start writes the same log file
    assert "usage ledger rows no control process took at stop kept in" in first
    kept = fastgw("usage", "--config", str(gw.config), "--format", "json", env=_env(gw))
    assert kept.returncode == 0 and "holds usage a worker stopped with" in kept.stderr, kept.stderr
    again = start_gateway(tmp_path, gw.config.read_text(), name="gw0", workers=2)  # the same state
    try:
        wait_until(lambda: not list(gw.state.glob(left.name)), 15, "the reports taken at the next start")
    finally:
        assert again.stop() == 0, again.stderr()
    out = fastgw("usage", "--config", str(gw.config), "--format", "json", env=_env(gw))
    assert out.returncode == 0, out.stderr
    [total] = json.loads(out.stdout)
    truth = served(fake)["gpt-4o-mini"]
    assert (total["requests"], total["prompt_tokens"]) == (13, truth["prompt_tokens"]), first + again.stderr()
    assert "not in these totals" not in out.stderr, out.stderr
    # Stopped as soon as it had taken the files, the control process still stops as a stop asks, not by
    # dying of the signal before its loop handles it.
    assert re.search(r"control \(pid \d+\) exited with status 0", again.stderr()), again.stderr()


def test_a_newcomer_sees_the_quickstarts_usage(gateway_factory: Callable[..., Gateway]) -> None:
    """``fastgw usage`` without a config reads the quickstart's store: the demo's requests, priced."""
    demo = free_port()
    text = QUICKSTART.read_text().replace("127.0.0.1:8080", "127.0.0.1:{port}")
    gw = gateway_factory(text.replace("127.0.0.1:8081", f"127.0.0.1:{demo}"))
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key="any", max_retries=0) as sdk:
        answer = sdk.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "hello there"}]
        )
    assert answer.usage is not None
    assert gw.stop() == 0
    out = fastgw("usage", "--group-by", "model", "--format", "json", env=_env(gw))
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)
    assert (row["model"], row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (
        "demo-chat",
        1,
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )
    # The quickstart's made-up demo prices: 0.15 and 0.60 USD per million tokens.
    expected = (answer.usage.prompt_tokens * 0.15 + answer.usage.completion_tokens * 0.60) / 1e6
    assert row["cost_usd"] == pytest.approx(expected, abs=1e-9)
    table = fastgw("usage", env=_env(gw))
    assert table.returncode == 0 and "requests" in table.stdout.splitlines()[0], table.stdout + table.stderr


def _env(gw: Gateway) -> dict[str, str]:
    return {"STATE_DIRECTORY": str(gw.state)}


def test_a_stream_the_stop_cuts_at_drain_timeout_is_in_the_ledger_and_logged_as_cut(
    gateway_factory: Callable[..., Gateway], fake: FakeOpenAI, secrets_dir: Path
) -> None:
    """A stream still open when drain_timeout passes is closed by the stopping worker. Its record used to
    complete only after the worker had sent its last ledger report, so the ledger never had the request;
    and its access log line read like an answer served whole."""
    config = ledger_config(fake.port, free_port(), secrets_dir) + "\n[server]\ndrain_timeout = 0.5\n"
    gw = gateway_factory(config, workers=1)
    acme, _ = issue(gw, "acme")
    first_chunk = threading.Event()

    def stream() -> None:
        """One chunk, then a provider that sends nothing more until it is hung up on."""
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=acme, max_retries=0, timeout=30) as sdk:
            try:
                for _ in sdk.chat.completions.create(
                    model="mini",
                    messages=[{"role": "user", "content": "a stream the stop will cut"}],
                    stream=True,
                ):
                    first_chunk.set()
            except openai.APIError:
                pass  # the cut, as the SDK sees it

    fake.faults.append("stall")  # the next request's
    client = threading.Thread(target=stream)
    client.start()
    assert first_chunk.wait(10), "the stream began"
    assert gw.stop() == 0
    client.join(10)
    out = fastgw("usage", "--config", str(gw.config), "--format", "json", env=_env(gw))
    assert out.returncode == 0, out.stderr
    [total] = json.loads(out.stdout)
    assert total["requests"] == 1, total
    [line] = [r for r in gw.log_records() if r.get("llm")]
    assert line["llm"].get("error") == "shutdown", json.dumps(line)


def test_a_request_still_waiting_for_its_provider_at_drain_timeout_is_answered_503(
    gateway_factory: Callable[..., Gateway], fake: FakeOpenAI, secrets_dir: Path
) -> None:
    """At drain_timeout the stopping worker closed every connection left: a client still waiting for
    its provider's answer got a bare reset, and the access log called it a 499 (the client's doing).
    Now it gets a 503 its SDK parses (and retries), and the log names the stop."""
    config = ledger_config(fake.port, free_port(), secrets_dir) + "\n[server]\ndrain_timeout = 0.5\n"
    gw = gateway_factory(config, workers=1)
    acme, _ = issue(gw, "acme")
    caught: list[BaseException] = []

    def ask() -> None:
        with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=acme, max_retries=0, timeout=30) as sdk:
            try:
                sdk.chat.completions.create(
                    model="mini", messages=[{"role": "user", "content": "an answer the stop will cut"}]
                )
            except openai.APIError as error:
                caught.append(error)

    seen = len(fake.requests)
    fake.first_token_delay = 10.0
    fake.faults.append("slow-first-token")  # the next request's: its answer waits 10 s
    try:
        client = threading.Thread(target=ask)
        client.start()
        wait_until(lambda: len(fake.requests) > seen, 10, "the request at the provider")
        assert gw.stop() == 0
        client.join(10)
    finally:
        fake.first_token_delay = 0.5
    [error] = caught
    assert isinstance(error, openai.APIStatusError) and error.status_code == 503, repr(error)
    assert "stopped before answering" in error.message and "127.0.0.1" not in error.message
    [line] = [r for r in gw.log_records() if r.get("llm")]
    assert (line["status"], line["llm"].get("error")) == (503, "shutdown"), json.dumps(line)
