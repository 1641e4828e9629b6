"""A consumer's data on request, end to end: ``fastgw consumers export`` prints everything held about
it as JSON, ``fastgw consumers erase`` removes it and its keys from every worker at once (through the
admin API), and the audit log records the erasure without the consumer's name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.api_keys import cli, issue, keys_config, status_on_all_workers
from tests.support.cli import fastgw
from tests.support.gateways import Gateway
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until

NAME = "jane.doe@example.com"


@pytest.fixture
def keyed(gateway_factory: Callable[..., Gateway], upstream: TestUpstream, secrets_dir: Path) -> Gateway:
    return gateway_factory(keys_config(upstream.port, free_port(), secrets_dir), workers=2)


def test_export_then_erase_through_the_cli(keyed: Gateway) -> None:
    gw = keyed
    key, key_id = issue(gw, NAME)
    header = f"X-API-Key: {key}\r\n"
    wait_until(lambda: status_on_all_workers(gw.port, "/api/x", header) == {200}, 5, "the key")

    held = json.loads(cli(gw, "consumers", "export", NAME))
    assert held["consumer"]["name"] == NAME and held["consumer"]["team"] == "payments"
    assert [k["id"] for k in held["keys"]] == [key_id] and key not in json.dumps(held)
    assert set(held["usage"]) == {"quotas", "llm_usage"}  # each usage table, empty or not

    out = cli(gw, "consumers", "erase", NAME)
    assert "erased: 1 keys removed" in out and "erased-" in out
    wait_until(lambda: status_on_all_workers(gw.port, "/api/x", header) == {401}, 1.0, "the erasure")
    assert NAME not in cli(gw, "consumers", "list")
    gone = fastgw("consumers", "export", NAME, "--config", str(gw.config))
    assert gone.returncode == 1 and "no consumer" in gone.stderr
    records = [json.loads(line) for line in (gw.state / "audit.log").read_text().splitlines()]
    erase = [r for r in records if r["event"] == "consumer.erase"]
    assert len(erase) == 1 and NAME not in json.dumps(erase[0]) and erase[0]["keys"] == 1
