"""Fixtures of the end-to-end tests: a gateway with its admin API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.admin import TOKEN, Admin, admin_config
from tests.support.gateways import Gateway
from tests.support.llm_gateway import LlmGateway, running_llm_gateway
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream


@pytest.fixture
def admin_gateway(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, tmp_path: Path
) -> tuple[Gateway, Admin]:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    gw = gateway_factory(admin_config(upstream.port, port, token_file), workers=2)
    return gw, Admin(port)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    """One gateway with llm routes in front of the fake OpenAI, Anthropic and Gemini providers (TLS), for
    a whole module: the SDK tests only read from it (each test resets the fakes' faults it sets)."""
    with running_llm_gateway(tmp_path_factory.mktemp("llm")) as running:
        yield running
