"""The built-in quick start's AI routes, as a newcomer uses them: the official OpenAI and Anthropic SDKs
against ``fastgw run``'s own config (its fake provider in the demo upstream), with exact token counts in
the access log. The quick start's text is used as shipped, only its two ports moved to free ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.support.gateways import Gateway
from tests.support.ports import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "fastgw" / "data" / "quickstart.toml"


def test_the_shipped_quickstart_is_the_documented_one() -> None:
    """README and conf/ point at conf/quickstart.toml; `fastgw run` serves the packaged copy."""
    assert (ROOT / "conf" / "quickstart.toml").read_text() == QUICKSTART.read_text()


@pytest.fixture
def quickstart(gateway_factory: Callable[..., Gateway]) -> Gateway:
    demo = free_port()
    text = QUICKSTART.read_text().replace("127.0.0.1:8080", "127.0.0.1:{port}")
    text = text.replace("127.0.0.1:8081", f"127.0.0.1:{demo}")
    return gateway_factory(text + '\n[access_log]\ntarget = "{log}"\n')


def llm_lines(gw: Gateway, count: int) -> list[dict[str, Any]]:
    def lines() -> list[dict[str, Any]]:
        return [record for record in gw.log_records() if "llm" in record]

    wait_until(lambda: len(lines()) >= count, 5, f"{count} llm access-log lines")
    return lines()


def test_openai_sdk_chat_stream_embeddings_and_models(quickstart: Gateway) -> None:
    with openai.OpenAI(  # closed at the end: its pooled connections are not left to the GC
        base_url=f"http://127.0.0.1:{quickstart.port}/v1", api_key="any string", max_retries=0
    ) as client:
        openai_sdk_calls(client)
    # Exact counts in the access log, the streamed ones included (the models list has no llm block).
    counted = [
        (r["llm"]["endpoint"], r["llm"]["stream"], r["llm"]["prompt_tokens"], r["llm"]["completion_tokens"])
        for r in llm_lines(quickstart, 4)
    ]
    assert counted == [
        ("chat", False, 2, 4),
        ("chat", True, 3, 5),
        ("chat", True, 3, 5),
        ("embeddings", False, 4, 0),
    ], counted


def openai_sdk_calls(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "hello there"}]
    )
    assert answer.choices[0].message.content == "You said: hello there"
    assert answer.model == "demo-chat"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 4)

    text, usage = "", None
    with client.chat.completions.create(  # closed on exit: its connection goes back to the pool
        model="demo-chat",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                usage = chunk.usage
    assert text == "You said: one two three"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 5)

    with client.chat.completions.create(
        model="demo-chat", messages=[{"role": "user", "content": "no usage please"}], stream=True
    ) as quiet:
        chunks = list(quiet)
    assert chunks and all(chunk.usage is None for chunk in chunks), "the usage chunk only for clients asking"

    vectors = client.embeddings.create(model="demo-embed", input=["a b c", "d"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens == 4
    assert sorted(m.id for m in client.models.list()) == ["demo-chat", "demo-embed"]


def test_anthropic_sdk_messages_and_stream(quickstart: Gateway) -> None:
    with anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{quickstart.port}", api_key="any string", max_retries=0
    ) as client:
        anthropic_sdk_calls(client)


def anthropic_sdk_calls(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="demo-chat", max_tokens=64, messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "You said: hello there"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 4)
    assert message.stop_reason == "end_turn"

    with client.messages.stream(
        model="demo-chat", max_tokens=64, messages=[{"role": "user", "content": "stream me"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "You said: stream me"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 4)

    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model="demo-chat",
            max_tokens=64,
            messages=[{"role": "assistant", "content": 7}],  # type: ignore[list-item,misc]
        )
    assert bad.value.status_code == 400
