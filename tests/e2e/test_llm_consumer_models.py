"""A consumer's own model list (``fastgw consumers create --model``): its keys reach only those models on
an llm route, /v1/models lists only them, and a consumer without a list may use every model the route
serves; the list reaches the workers with the key (no reload)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.support.api_keys import KEY_RE
from tests.support.cli import fastgw
from tests.support.demo_llm import demo_llm_config
from tests.support.gateways import Gateway
from tests.support.ports import free_port


def config(demo: int, admin: int, secrets: Path) -> str:
    return demo_llm_config(
        demo,
        route='auth = "api_key"',
        extra=f"""
        [admin]
        bind = "127.0.0.1:{admin}"
        token = {{ file = "{secrets / "admin.token"}" }}

        [keys]
        pepper = {{ file = "{secrets / "pepper"}" }}

        [api_key]
        headers = ["Authorization"]
        """,
    )


@pytest.fixture
def keyed(gateway_factory: Callable[..., Gateway], secrets_dir: Path) -> Gateway:
    return gateway_factory(config(free_port(), free_port(), secrets_dir))


def new_key(gw: Gateway, consumer: str, *models: str) -> str:
    created = fastgw(
        "consumers", "create", consumer, *(f"--model={m}" for m in models), "--config", str(gw.config)
    )
    assert created.returncode == 0, created.stderr
    issued = fastgw("keys", "create", consumer, "--config", str(gw.config))
    assert issued.returncode == 0, issued.stderr
    match = KEY_RE.search(issued.stdout)
    assert match is not None, issued.stdout
    return match.group(0)


def test_a_consumers_models_bound_its_keys(keyed: Gateway) -> None:
    narrow = new_key(keyed, "chat-only", "demo-ch*")
    wide = new_key(keyed, "anything")
    with openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=narrow, max_retries=0) as client:
        answer = client.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "You said: hi"
        with pytest.raises(openai.NotFoundError) as refused:
            client.embeddings.create(model="demo-embed", input="x")
        assert "demo-embed" in refused.value.message
        assert [m.id for m in client.models.list()] == ["demo-chat"]
    with openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=wide, max_retries=0) as client:
        assert client.embeddings.create(model="demo-embed", input="x").data
        assert sorted(m.id for m in client.models.list()) == ["demo-chat", "demo-embed"]
    with (
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="fgw_not-a-key", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()
    shown = fastgw("consumers", "show", "chat-only", "--config", str(keyed.config))
    assert "models: demo-ch*" in shown.stdout
