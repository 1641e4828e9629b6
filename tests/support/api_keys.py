"""Consumers and API keys issued through the ``fastgw`` CLI against a running gateway's store."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.cli import fastgw
from tests.support.clients import get
from tests.support.gateways import Gateway, basic_config

KEY_RE = re.compile(r"fgw_[0-9A-Za-z]{49}")  # the plaintext of a new key in the CLI's output


def keys_config(
    upstream_port: int, admin_port: int, secrets_dir: Path, mode: str = "enforce", *, throttle: bool = False
) -> str:
    """Two key-authenticated routes and the admin API. [auth_throttle] is off unless asked for: a test that
    polls until a revoked or disabled key is refused on every worker presents it (a failure) dozens of
    times, and past slow_after each answer is held back 1 s (test_consumer_lifecycle took 60 s for that)."""
    throttle_section = "" if throttle else "[auth_throttle]\n        enabled = false"
    return basic_config(
        upstream_port,
        extra=f"""
        [[routes]]
        name = "api"
        path = "/api"
        upstream = "backend"
        auth = "api_key"

        [[routes]]
        name = "reports"
        path = "/reports"
        upstream = "backend"
        auth = "api_key"

        [admin]
        bind = "127.0.0.1:{admin_port}"
        token = {{ file = "{secrets_dir / "admin.token"}" }}

        [keys]
        pepper = {{ file = "{secrets_dir / "pepper"}" }}

        [api_key]
        headers = ["Authorization", "X-API-Key"]
        mode = "{mode}"

        {throttle_section}
        """,
    )


def cli(gw: Gateway, *args: str) -> str:
    out = fastgw(*args, "--config", str(gw.config))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def ensure_consumer(gw: Gateway, consumer: str = "acme") -> None:
    if consumer not in cli(gw, "consumers", "list"):
        cli(gw, "consumers", "create", consumer, "--team", "payments", "--role", "reader")


def issue(gw: Gateway, consumer: str = "acme", *extra: str) -> tuple[str, str]:
    ensure_consumer(gw, consumer)
    return create_key(gw, consumer, *extra)


def create_key(gw: Gateway, consumer: str, *extra: str) -> tuple[str, str]:
    """One `fastgw keys create` for an existing consumer: the key's plaintext and its id."""
    out = cli(gw, "keys", "create", consumer, *extra)
    key = KEY_RE.search(out)
    assert key, out
    key_id = re.search(r"key (k_\w+)", out)
    assert key_id, out
    return key.group(0), key_id.group(1)


def status_on_all_workers(port: int, path: str, header: str, n: int = 12) -> set[int]:
    """Statuses of n requests, each on a new connection (so both workers answer some)."""
    return {get(port, path, headers=header).status for _ in range(n)}
