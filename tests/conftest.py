"""Shared fixtures: real sockets on 127.0.0.1 with OS-assigned ports, a gateway in a subprocess, and a
wire-true test upstream that records what reached it and answers with exact bytes. The helpers the
fixtures are built from live in tests/support/; test modules import them from there, never from here.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.gateways import Gateway, basic_config, start_gateway
from tests.support.postgres import PostgresServer
from tests.support.redis_server import RedisServer
from tests.support.routes import inject_policy  # noqa: F401  (a fixture, shared by every test)
from tests.support.stores import BACKENDS, StoreMaker
from tests.support.upstreams import TestUpstream

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

HTTP1_BACKENDS = ["httptools", "h11"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a stale build: a compiled module older than its source would hide the source's
    changes (fastgw/native.py). CI must also run the compiled build, never the .py files by accident."""
    from fastgw.native import status

    states = status()
    stale = [name for name, state in states.items() if state == "stale"]
    if stale:
        pytest.exit(
            f"compiled modules older than their source: {', '.join(stale)}; rebuild with "
            "`pip install -e .` (scripts/dev.sh test does it)",
            returncode=2,
        )
    if os.environ.get("CI") == "true" and "source" in states.values():
        pytest.exit(f"CI runs the compiled build, but some modules are not compiled: {states}", returncode=2)


@pytest.fixture(autouse=True)
def _collect_after_test() -> Iterator[None]:
    """Collect garbage after each test, so a leaked socket, transport or loop raises its ResourceWarning
    (an error under filterwarnings=error) in the test that leaked it rather than in a later one."""
    yield
    gc.collect()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (tests/support/postgres.py); a test that stops it starts it
    again before it ends."""
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A new empty database of its own for one test."""
    return postgres_server.create_database()


@pytest.fixture(params=BACKENDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreMaker]:
    """Empty stores, on SQLite and on PostgreSQL: a test of the store protocol runs on both."""
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    maker = StoreMaker(str(request.param), tmp_path, dsn)
    yield maker
    maker.close()


@pytest.fixture
def upstream() -> Iterator[TestUpstream]:
    server = TestUpstream()
    yield server
    server.close()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def factory(body: str, **kw: Any) -> Gateway:
        gw = start_gateway(tmp_path, body, name=f"gw{len(started)}", **kw)
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        code = gw.stop()
        assert code == 0, f"gateway exited with {code}; stderr:\n{gw.stderr()}"


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """An admin token and a key pepper, as files a config can reference."""
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "admin.token").write_text("admin-token-for-keys-tests-0c5e9a7d31f4\n")
    (d / "pepper").write_bytes(os.urandom(32).hex().encode())
    return d


@pytest.fixture(params=HTTP1_BACKENDS)
def http1_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway], upstream: TestUpstream, http1_backend: str) -> Gateway:
    """A gateway with one catch-all public route to the test upstream, on each parser backend."""
    return gateway_factory(basic_config(upstream.port, http1=http1_backend))
