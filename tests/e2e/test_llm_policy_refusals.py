"""The gateway's own refusals on an llm route (a rate limit's 429, before the handler runs) reach the
client in its SDK's error shape, with the reason and Retry-After, over HTTP/1.1; other routes keep
problem+json."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import openai
import pytest

from tests.support.clients import get
from tests.support.demo_llm import demo_llm_config
from tests.support.gateways import Gateway
from tests.support.ports import free_port


def config(demo: int) -> str:
    return demo_llm_config(
        demo,
        route='auth = "none"\nlimits = [{ name = "tight", rate = 1, per = 60.0, key = "ip" }]',
        extra="""
        [[routes]]
        name = "plain"
        path = "/plain"
        upstream = "demo"
        auth = "none"
        limits = [{ name = "tight-plain", rate = 1, per = 60.0, key = "ip" }]
        """,
    )


@pytest.fixture
def limited(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(config(free_port()))


def test_a_rate_limit_refusal_is_in_each_sdks_shape(limited: Gateway) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=f"{limited.url}/v1", api_key="any", max_retries=0) as client:
        client.chat.completions.create(model="demo-chat", messages=messages)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="demo-chat", messages=messages)  # type: ignore[arg-type]
    assert refused.value.response.headers["content-type"] == "application/json"
    assert refused.value.response.headers.get("retry-after")
    assert "rate limit 'tight'" in refused.value.message  # the SDK read the reason from OpenAI's shape
    with (
        anthropic.Anthropic(base_url=limited.url, api_key="any", max_retries=0) as claude,
        pytest.raises(anthropic.RateLimitError) as also,
    ):
        claude.messages.create(model="demo-chat", max_tokens=16, messages=messages)  # type: ignore[arg-type]
    body = also.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    # a proxy route keeps problem+json
    assert get(limited.port, "/plain/x").status == 200
    second = get(limited.port, "/plain/x")
    assert second.status == 429 and second.header(b"content-type") == b"application/problem+json"
