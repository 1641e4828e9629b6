"""The fake OpenAI provider is wire-true: the official ``openai`` SDK, pointed at it directly (no gateway),
parses its answers, streams, embeddings, model list and errors as it would OpenAI's. The gateway's own SDK
tests build on this fake."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from fastgw.tls.dev_certs import write_dev_certificates
from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_openai_answers import REPLY
from tests.support.openai_examples import WEATHER_TOOL

KEY = "sk-fake"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY).start_in_thread()
    yield server
    server.stop_thread()


def client(fake: FakeOpenAI, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0, **kw)  # type: ignore[arg-type]


def test_chat_stream_and_usage(fake: FakeOpenAI) -> None:
    with client(fake) as sdk:
        answer = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}]
        )
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi there"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert answer.choices[0].message.content == REPLY
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 7)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 9


def test_streamed_tool_call(fake: FakeOpenAI) -> None:
    with client(fake) as sdk:
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "weather in Boston?"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            stream=True,
        )
        arguments = "".join(
            call.function.arguments or ""
            for chunk in stream
            if chunk.choices
            for call in chunk.choices[0].delta.tool_calls or []
            if call.function is not None
        )
    assert arguments == '{"location": "fake"}'


def test_embeddings_and_models(fake: FakeOpenAI) -> None:
    with client(fake) as sdk:
        embedded = sdk.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])  # base64
        models = sdk.models.list()
    assert [len(d.embedding) for d in embedded.data] == [8, 8]
    assert embedded.usage.prompt_tokens == 3
    assert [m.id for m in models.data] == fake.models


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("fault-429", openai.RateLimitError),
        ("fault-500", openai.InternalServerError),
        ("fault-529", openai.APIStatusError),
    ],
)
def test_errors_as_the_sdk_sees_them(fake: FakeOpenAI, model: str, error: type[Exception]) -> None:
    with client(fake) as sdk, pytest.raises(error):
        sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_a_wrong_key_is_refused(fake: FakeOpenAI) -> None:
    sdk = openai.OpenAI(api_key="wrong", base_url=fake.base_url, max_retries=0)
    with sdk, pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        sdk.models.list()


def test_over_tls_with_the_test_ca(tmp_path: Path) -> None:
    certs = write_dev_certificates(tmp_path / "certs")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(certs.server_cert, certs.server_key)
    fake = FakeOpenAI(api_key=KEY, ssl_context=server_tls).start_in_thread()
    try:
        verify = ssl.create_default_context(cafile=str(certs.ca_cert))
        with client(fake, http_client=openai.DefaultHttpxClient(verify=verify)) as sdk:
            answer = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    finally:
        fake.stop_thread()
    assert fake.base_url.startswith("https://")
    assert answer.choices[0].message.content == REPLY
