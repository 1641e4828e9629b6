"""Bad input, as the openai SDK sees it: each a defined outcome with a clear error in OpenAI's shape (or,
for a body over the route's limit, the gateway's problem+json: see below), the gateway still serving the
next request, and no provider address in what the client gets.

Bad requests: non-JSON and wrong-typed bodies, an unknown model, a model the route does not allow, a body
over the route's ``max_body_bytes``, ``n`` > 1 for a provider without it, a tool with an invalid JSON
Schema. Bad providers: an HTML page, an empty 200, a truncated answer, a stream without ``[DONE]``, a
10 MiB event line, an answer without usage, a 40 MB answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.clients import request
from tests.support.llm_gateway import LlmGateway, llm_record, running_llm_gateway

PROVIDER_FAULTS = (
    "html",
    "empty",
    "truncated",
    "no-done",
    "huge-line",
    "huge-response",
    "no-usage",
    "inflated-usage",
)
SMALL_BODY = 4096


WRONG_KEY = "sk-wrong-provider-key-0123456789abcdef"


def fault_models(wrong_key_file: Path) -> str:
    tables = "".join(
        f"""
        [[llm.models]]
        name = "bad-{fault}"
        targets = [{{ provider = "oa", model = "fault-{fault}" }}]
        """
        for fault in PROVIDER_FAULTS
    )
    return (
        tables
        + f"""
        [[llm.providers]]
        name = "wrongkey"
        kind = "openai"
        upstream = "openai"
        base_path = "/v1"
        api_key = {{ file = "{wrong_key_file}" }}

        [[llm.models]]
        name = "misconfigured"
        targets = [{{ provider = "wrongkey", model = "gpt-4o-mini" }}]

        [[routes]]
        name = "small"
        path = "/small/v1"
        strip_prefix = true
        auth = "none"
        kind = "llm"
        max_body_bytes = {SMALL_BODY}
        """
    )


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    directory = tmp_path_factory.mktemp("bad")
    (directory / "wrong.key").write_text(WRONG_KEY + "\n")
    with running_llm_gateway(directory, fault_models(directory / "wrong.key")) as running:
        yield running


@pytest.fixture
def sdk(bad: LlmGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=bad.base_url, api_key="any", max_retries=0, timeout=30) as opened:
        yield opened


def hello(sdk: openai.OpenAI, model: str = "chat-openai", **kw: object) -> str:
    answer = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=32,
        **kw,  # type: ignore[arg-type]
    )
    return answer.choices[0].message.content or ""


def leaks(bad: LlmGateway, text: str) -> bool:
    ports = (bad.stack.openai.port, bad.stack.anthropic.port, bad.stack.gemini.port, bad.stack.dead_port)
    return "127.0.0.1" in text or any(str(p) in text for p in ports)


def check_afterwards(bad: LlmGateway, sdk: openai.OpenAI, error: openai.APIStatusError, status: int) -> None:
    assert error.status_code == status
    assert not leaks(bad, str(error.body)), error.body
    assert hello(sdk)  # the gateway keeps serving


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_a_400_in_openai_shape(
    bad: LlmGateway, sdk: openai.OpenAI, body: bytes
) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\ncontent-type: application/json\r\n"
    resp = request(bad.gateway.port, head + b"content-length: %d\r\n\r\n" % len(body) + body)
    assert resp.status == 400
    error = json.loads(resp.body)["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert hello(sdk)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ],
)
def test_wrong_typed_fields_are_a_400_naming_the_parameter(
    bad: LlmGateway, sdk: openai.OpenAI, fields: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="chat-openai", **fields)  # type: ignore[call-overload]
    assert caught.value.param == param
    check_afterwards(bad, sdk, caught.value, 400)


def test_an_unknown_model_is_a_404_model_not_found(bad: LlmGateway, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        hello(sdk, "gpt-nonexistent")
    assert caught.value.code == "model_not_found" and "gpt-nonexistent" in caught.value.message
    check_afterwards(bad, sdk, caught.value, 404)


def test_a_model_the_route_does_not_allow_is_a_404_like_an_unknown_one(
    bad: LlmGateway, sdk: openai.OpenAI
) -> None:
    """Not 403: a caller learns nothing about models it may not use."""
    with openai.OpenAI(base_url=bad.gateway.url + "/narrow/v1", api_key="any", max_retries=0) as narrow:
        with pytest.raises(openai.NotFoundError) as caught:
            narrow.embeddings.create(model="embed-openai", input="text")
        assert caught.value.code == "model_not_found"
        assert hello(narrow)  # chat-* models are allowed there
    check_afterwards(bad, sdk, caught.value, 404)


def test_a_body_over_the_routes_limit_is_a_413(bad: LlmGateway, sdk: openai.OpenAI) -> None:
    """The limit is the connection's, enforced before any handler reads the body; on an llm route the
    refusal still comes in OpenAI's error object (Route.error_body, set by the handler kind: the
    connection calls it without knowing the kind), so the SDK shows the reason, not just the status."""
    with openai.OpenAI(base_url=bad.gateway.url + "/small/v1", api_key="any", max_retries=0) as small:
        assert hello(small)
        with pytest.raises(openai.APIStatusError) as caught:
            hello_big = [{"role": "user", "content": "word " * SMALL_BODY}]
            small.chat.completions.create(model="chat-openai", messages=hello_big)  # type: ignore[arg-type]
    assert caught.value.status_code == 413
    assert caught.value.response.headers["content-type"] == "application/json"
    assert f"exceeds {SMALL_BODY} bytes" in caught.value.message  # the SDK read OpenAI's error object
    check_afterwards(bad, sdk, caught.value, 413)


def test_n_above_one_on_a_provider_without_it_is_a_400_naming_n(bad: LlmGateway, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        hello(sdk, "chat-anthropic", n=2)
    assert caught.value.param == "n" and "'n' is not supported" in caught.value.message
    check_afterwards(bad, sdk, caught.value, 400)


@pytest.mark.parametrize(
    "parameters",
    [{"type": "objekt"}, {"type": "object", "properties": []}, {"type": "object", "required": "city"}],
)
def test_a_tool_with_an_invalid_json_schema_is_a_400(
    bad: LlmGateway, sdk: openai.OpenAI, parameters: dict[str, object]
) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": parameters}}
    with pytest.raises(openai.BadRequestError) as caught:
        hello(sdk, tools=[tool])
    assert str(caught.value.param).startswith("tools[0].function.parameters")
    check_afterwards(bad, sdk, caught.value, 400)


@pytest.mark.parametrize("fault", ["html", "empty", "truncated", "huge-response"])
def test_a_provider_answer_that_is_not_a_completion_is_a_502(
    bad: LlmGateway, sdk: openai.OpenAI, fault: str
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        hello(sdk, f"bad-{fault}")
    assert caught.value.message.startswith("Error code: 502 - the provider")
    record = llm_record(bad.gateway, caught.value.response.headers)
    assert record["error"] and record["model"] == f"bad-{fault}"
    check_afterwards(bad, sdk, caught.value, 502)


@pytest.mark.parametrize("fault", ["no-done", "huge-line"])
def test_a_stream_that_breaks_its_format_ends_with_an_error(
    bad: LlmGateway, sdk: openai.OpenAI, fault: str
) -> None:
    stream = sdk.chat.completions.create(
        model=f"bad-{fault}", messages=[{"role": "user", "content": "stream"}], stream=True, max_tokens=32
    )
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert not leaks(bad, str(caught.value.body))
    assert hello(sdk)


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_without_usage_is_logged_as_missing(
    bad: LlmGateway, sdk: openai.OpenAI, stream: bool
) -> None:
    if stream:
        opened = sdk.chat.completions.create(
            model="bad-no-usage",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(opened)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        headers = opened.response.headers
    else:
        raw = sdk.chat.completions.with_raw_response.create(
            model="bad-no-usage", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().choices[0].message.content and raw.parse().usage is None
        headers = raw.headers
    record = llm_record(bad.gateway, headers)
    assert record["usage"] == "missing" and "prompt_tokens" not in record


@pytest.mark.parametrize("stream", [False, True])
def test_usage_larger_than_the_answer_is_counted_and_flagged(
    bad: LlmGateway, sdk: openai.OpenAI, stream: bool
) -> None:
    """A provider reporting 1,000,000 answer tokens for a few words: the count stands (it is what the
    provider bills: the ledger and budgets keep it) and the access log flags it for the operator."""
    ask = {"model": "bad-inflated-usage", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        raw = sdk.chat.completions.with_raw_response.create(
            **ask, stream=True, stream_options={"include_usage": True}
        )
        usage = [c.usage for c in raw.parse() if c.usage is not None][-1]
    else:
        raw = sdk.chat.completions.with_raw_response.create(**ask)
        usage = raw.parse().usage
    assert usage is not None and usage.completion_tokens == 1_000_000  # passed on as reported
    record = llm_record(bad.gateway, raw.headers)
    assert record["completion_tokens"] == 1_000_000 and record["usage_exceeds_answer"] is True
    plain = sdk.chat.completions.with_raw_response.create(
        model="chat-openai", **{"messages": ask["messages"]}
    )
    assert "usage_exceeds_answer" not in llm_record(bad.gateway, plain.headers)


def test_a_provider_refusing_the_gateways_key_is_a_502_that_shows_no_part_of_it(
    bad: LlmGateway, sdk: openai.OpenAI
) -> None:
    """Not a 401: the client's credentials are fine. The provider quotes the key it got, masked in the
    middle (as OpenAI does): the gateway's key, whose ends the client must not learn either."""
    with pytest.raises(openai.InternalServerError) as caught:
        hello(sdk, "misconfigured")
    assert "refused the gateway's credentials (401)" in caught.value.message
    assert WRONG_KEY[:6] not in str(caught.value.body) and WRONG_KEY[-4:] not in str(caught.value.body)
    check_afterwards(bad, sdk, caught.value, 502)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": []}, "input"),
        ({"input": [""]}, "input[0]"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_bad_embeddings_requests_are_a_400_naming_the_parameter(
    bad: LlmGateway, sdk: openai.OpenAI, fields: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model="embed-openai", **fields)  # type: ignore[arg-type]
    assert caught.value.param == param
    check_afterwards(bad, sdk, caught.value, 400)
