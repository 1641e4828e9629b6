"""[[prompt_api]] end to end: a gateway subprocess in front of the fake OpenAI provider (TLS), clients over
real sockets. A valid call, bodies the input schema refuses, an output schema's one retry and its 502, the
context window refused before any provider call, auth as on any route, the admin listing and OpenAPI."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import validators

from tests.support.api_keys import cli, create_key, issue
from tests.support.clients import Response, request
from tests.support.demo_llm import demo_llm_config
from tests.support.gateways import Gateway
from tests.support.llm_gateway import ADMIN_TOKEN, LlmGateway, llm_record, post_json, running_llm_gateway
from tests.support.ports import free_port
from tests.support.waiting import wait_until

REQUEST = 4.0  # [llm] request_timeout
SLOW = 2.5  # the slow calls' delay: two of them pass REQUEST, one does not
SLACK = 1.5  # scheduling and TLS on a loaded CI machine

EXTRA = """
[llm]
request_timeout = {request}

[keys]
pepper = {{ file = "{secrets}/pepper" }}

[api_key]
headers = ["Authorization"]

[[llm.models]]
name = "prompt-model"
targets = [{{ provider = "oa", model = "gpt-4o-mini" }}]
context_window = 300

[[routes]]
name = "prompts"
path = "/prompts"
kind = "prompt_api"
auth = "none"

[[routes]]
name = "secured"
path = "/secured"
kind = "prompt_api"
auth = "api_key"

[[prompt_api]]
name = "echo"
path = "/prompts/echo"
description = "Repeats a text."
model = "prompt-model"
temperature = 0.3
max_tokens = 50
system = "You repeat texts in a {{{{ tone }}}} tone."
template = "Repeat: {{{{ text }}}} \\\\{{{{ literal }}}}"
input_schema = {{ type = "object", required = ["text"], additionalProperties = false, \
properties = {{ text = {{ type = "string", maxLength = 5000 }}, tone = {{ type = "string" }} }} }}

[[prompt_api]]
name = "classify"
path = "/prompts/classify"
model = "prompt-model"
template = "Classify: {{{{ text }}}}"
input_schema = {{ type = "object", required = ["text"], properties = {{ text = {{ type = "string" }} }} }}
output_schema = {{ type = "object", required = ["label"], additionalProperties = false, \
properties = {{ label = {{ type = "string", enum = ["spam", "ham"] }} }} }}

[[prompt_api]]
name = "short"
path = "/prompts/short"
model = "prompt-model"
max_tokens = 2
template = "{{{{ text }}}}"
input_schema = {{ type = "object", properties = {{ text = {{ type = "string" }}, any = {{}} }} }}

[[prompt_api]]
name = "short-json"
path = "/prompts/short-json"
model = "prompt-model"
max_tokens = 2
template = "{{{{ text }}}}"
input_schema = {{ type = "object", properties = {{ text = {{ type = "string" }} }} }}
output_schema = {{ type = "object", properties = {{ label = {{ type = "string" }} }} }}

[[prompt_api]]
name = "order"
path = "/prompts/order"
model = "prompt-model"
template = "Order {{{{ id }}}} of {{{{ ids }}}}"
input_schema = {{ type = "object", required = ["id"], properties = {{ id = {{ type = "integer" }}, \
ids = {{ type = "array", items = {{ type = "integer" }} }} }} }}
output_schema = {{ type = "object", required = ["id"], properties = {{ id = {{ type = "integer" }} }} }}

[[prompt_api]]
name = "private"
path = "/secured/private"
model = "prompt-model"
template = "{{{{ text }}}}"
input_schema = {{ type = "object", properties = {{ text = {{ type = "string" }} }} }}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    directory = tmp_path_factory.mktemp("prompts")
    secrets = directory / "secrets"
    secrets.mkdir()
    (secrets / "pepper").write_text("p" * 32 + "\n")
    with running_llm_gateway(directory, EXTRA.format(secrets=secrets, request=REQUEST)) as running:
        yield running


def post(gw: LlmGateway, path: str, body: Any, headers: str = "") -> Response:
    return post_json(gw.gateway, path, body, headers)


def admin(gw: LlmGateway, path: str) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{gw.admin_port}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_a_valid_call_fills_the_templates_and_returns_the_result(gw: LlmGateway) -> None:
    fake = gw.stack.openai
    seen = len(fake.requests)
    resp = post(gw, "/prompts/echo", {"text": "{{ tone }} hello", "tone": "dry"})
    assert resp.status == 200, resp.body
    assert resp.header(b"content-type") == b"application/json"
    assert resp.header(b"x-fastgw-llm-target") is None  # an llm route's header names provider and model
    assert json.loads(resp.body) == {"result": "Hello! This is the fake provider answering."}
    assert len(fake.requests) == seen + 1
    sent = fake.requests[-1].json
    assert sent["model"] == "gpt-4o-mini"
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 50
    assert "response_format" not in sent
    # The value is inserted once, never expanded; the escaped {{ stays literal.
    assert sent["messages"] == [
        {"role": "system", "content": "You repeat texts in a dry tone."},
        {"role": "user", "content": "Repeat: {{ tone }} hello {{ literal }}"},
    ]
    record = llm_record(gw.gateway, dict((k.decode(), v.decode()) for k, v in resp.headers))
    assert record["endpoint"] == "prompt_api" and record["model"] == "prompt-model"
    assert record["prompt_tokens"] == 7 + 8 and record["completion_tokens"] == 7  # the fake counts words
    assert record["cost_usd"] > 0 and "cost" not in record  # priced (it was "unknown"), like an llm route's


def test_a_body_the_schema_refuses_is_a_400_naming_the_path(gw: LlmGateway) -> None:
    fake = gw.stack.openai
    seen = len(fake.requests)
    wrong_type = post(gw, "/prompts/echo", {"text": 5})
    assert wrong_type.status == 400
    assert wrong_type.header(b"content-type") == b"application/problem+json"
    problem = json.loads(wrong_type.body)
    assert problem["path"] == "$.text" and problem["status"] == 400
    assert problem["detail"] == "$.text: 5 is not of type 'string'"
    extra = json.loads(post(gw, "/prompts/echo", {"text": "x", "other": 1}).body)
    assert extra["path"] == "$" and "'other' was unexpected" in extra["detail"]
    missing = json.loads(post(gw, "/prompts/echo", {}).body)
    assert missing["detail"] == "$: 'text' is a required property"
    not_json = post(gw, "/prompts/echo", b"{text")
    assert not_json.status == 400 and json.loads(not_json.body)["detail"] == "the body is not JSON"
    too_long = json.loads(post(gw, "/prompts/echo", {"text": "x" * 5001}).body)
    assert too_long["path"] == "$.text" and len(too_long["detail"]) <= 320  # the value is not echoed whole
    assert len(fake.requests) == seen  # nothing reached the provider


def test_output_schema_is_asked_for_validated_and_retried_once(gw: LlmGateway) -> None:
    fake = gw.stack.openai
    seen = len(fake.requests)
    fake.texts.extend(["Sure! here is JSON: {", '{"label": "spam"}'])
    resp = post(gw, "/prompts/classify", {"text": "buy now"})
    assert resp.status == 200, resp.body
    assert json.loads(resp.body) == {"result": {"label": "spam"}}
    assert len(fake.requests) == seen + 2
    response_format = fake.requests[-1].json["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "classify"
    assert response_format["json_schema"]["schema"]["properties"]["label"]["enum"] == ["spam", "ham"]
    record = llm_record(gw.gateway, dict((k.decode(), v.decode()) for k, v in resp.headers))
    assert record["prompt_tokens"] == 2 * 3  # both calls counted
    assert record["cost_usd"] > 0  # both calls priced, each at its target, and summed
    # Twice an answer that does not match: a 502 naming the violation, after exactly two calls.
    fake.texts.extend(['{"label": "eggs"}', '{"label": "eggs"}'])
    bad = post(gw, "/prompts/classify", {"text": "x"})
    assert bad.status == 502
    problem = json.loads(bad.body)
    assert problem["type"].endswith("/output-schema-violation")
    assert "$.label: 'eggs' is not one of ['spam', 'ham']" in problem["detail"]
    assert len(fake.requests) == seen + 4


def test_integers_past_64_bits_reach_the_template_and_the_client_as_written(gw: LlmGateway) -> None:
    """A 30-digit order number in the body, and one in the model's answer: every digit kept (orjson alone
    read them as floats, 1.2345678901234568e+29 in the prompt, and could not write one back)."""
    fake = gw.stack.openai
    fake.texts.append('{"id": 98765432109876543210987654321}')
    body = b'{"id": 123456789012345678901234567890, "ids": [-9223372036854775809, 18446744073709551616]}'
    resp = post(gw, "/prompts/order", body)
    assert resp.status == 200, resp.body
    prompt = fake.requests[-1].json["messages"][-1]["content"]
    assert prompt == "Order 123456789012345678901234567890 of [-9223372036854775809,18446744073709551616]"
    assert json.loads(resp.body) == {"result": {"id": 98765432109876543210987654321}}


def test_the_output_schema_retry_shares_the_request_timeout(gw: LlmGateway) -> None:
    """A first answer that does not match, after SLOW seconds, then a second call as slow: together past
    request_timeout, which bounds the request, not each call (each run had its own: 2 x SLOW, then a
    502)."""
    fake = gw.stack.openai
    fake.first_token_delay = SLOW
    fake.faults.extend(["slow-first-token"] * 2)
    fake.texts.extend(["not json", "not json either"])
    began = time.monotonic()
    try:
        resp = post(gw, "/prompts/classify", {"text": "x"})
    finally:
        fake.first_token_delay = 0.5
        fake.faults.clear()
        fake.texts.clear()
    elapsed = time.monotonic() - began
    assert resp.status == 504, resp.body
    assert json.loads(resp.body)["detail"] == "the model's provider did not answer in time"
    assert REQUEST <= elapsed < REQUEST + SLACK, elapsed
    record = llm_record(gw.gateway, dict((k.decode(), v.decode()) for k, v in resp.headers))
    assert record["error"] == "request_timeout" and record["attempts"] == 2


def test_past_the_context_window_is_a_400_before_any_provider_call(gw: LlmGateway) -> None:
    fake = gw.stack.openai
    seen = len(fake.requests)
    resp = post(gw, "/prompts/echo", {"text": "word " * 200})  # ~1000 bytes: ~250 tokens + 50 answer
    assert resp.status == 400
    problem = json.loads(resp.body)
    assert problem["type"].endswith("/context-window-exceeded")
    # The numbers would give away the hidden prompt's length and the model: in the log only.
    assert problem["detail"].startswith("the input is too long for this API")
    assert "300" not in problem["detail"] and "prompt-model" not in problem["detail"]
    assert "context window of 300" in access_record(gw, resp)["error"]
    assert len(fake.requests) == seen
    assert post(gw, "/prompts/echo", {"text": "word " * 100}).status == 200  # ~125 + 50 + overhead fits


def access_record(gw: LlmGateway, resp: Response) -> dict[str, Any]:
    """The access-log record of ``resp`` (by its x-request-id), waiting for it."""
    request_id = (resp.header(b"x-request-id") or b"").decode()

    def found() -> dict[str, Any] | None:
        return next((r for r in gw.gateway.log_records() if r.get("request_id") == request_id), None)

    return wait_until(found, 5.0, f"the access-log record of {request_id}")  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("fault", "status", "detail", "said"),
    [
        ("429", 429, "the model's provider is limiting requests: try again later", "Rate limit reached"),
        ("500", 502, "the model's provider failed to answer", "The server had an error"),
    ],
)
def test_a_provider_failure_tells_the_client_its_kind_and_the_log_what_was_said(
    gw: LlmGateway, fault: str, status: int, detail: str, said: str
) -> None:
    """A provider's message names what a prompt API hides (the provider, its model, an account: "Rate
    limit reached for gpt-4o-mini in organization org-..."): it reached the client verbatim."""
    gw.stack.openai.faults.append(fault)
    resp = post(gw, "/prompts/echo", {"text": "hello"})
    assert resp.status == status, resp.body
    problem = json.loads(resp.body)
    assert (problem["type"].rsplit("/", 1)[1], problem["detail"]) == ("provider-error", detail)
    for hidden in (b"gpt-4o-mini", b"prompt-model", b"oa/", said.encode()):
        assert hidden not in resp.body and all(hidden not in value for _, value in resp.headers)
    assert said in access_record(gw, resp)["error"]


def test_bodies_too_deep_or_not_objects_are_400s_never_500s(gw: LlmGateway) -> None:
    """A value nested 300 deep passed the schema of a free-form field and then failed to fill the
    template (orjson writes 254 levels at most): a 500. A root that is no object: no API takes one."""
    seen = len(gw.stack.openai.requests)
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    too_deep = post(gw, "/prompts/short", {"text": "a", "any": deep})
    assert too_deep.status == 400, too_deep.body
    assert "nested deeper than 64" in json.loads(too_deep.body)["detail"]
    for body in ([1, 2], "text", 3):
        refused = post(gw, "/prompts/short", body)
        assert (
            refused.status == 400 and json.loads(refused.body)["detail"] == "the body must be a JSON object"
        )
    assert len(gw.stack.openai.requests) == seen


def test_an_answer_cut_at_max_tokens_says_so_and_is_not_asked_again(gw: LlmGateway) -> None:
    """Cut at the API's max_tokens, an answer went out as a plain 200; with an output schema, the cut
    JSON was asked for again (the same prompt, cut again, billed twice) and then a 502 blamed the model."""
    whole = post(gw, "/prompts/short", {"text": "hello"})
    assert whole.status == 200 and json.loads(whole.body) == {"result": "Hello! This ", "truncated": True}
    seen = len(gw.stack.openai.requests)
    cut = post(gw, "/prompts/short-json", {"text": "hello"})
    assert cut.status == 502
    problem = json.loads(cut.body)
    assert problem["type"].endswith("/answer-truncated") and "max_tokens (2)" in problem["detail"]
    assert len(gw.stack.openai.requests) == seen + 1


def test_auth_applies_as_on_any_route(gw: LlmGateway) -> None:
    assert post(gw, "/secured/private", {"text": "hi"}).status == 401
    assert post(gw, "/secured/private", {"text": "hi"}, "Authorization: Bearer fgw_wrong\r\n").status == 401
    key, _ = issue(gw.gateway, "app")
    ok = post(gw, "/secured/private", {"text": "hi"}, f"Authorization: Bearer {key}\r\n")
    assert ok.status == 200, ok.body


def test_a_credential_without_the_model_is_refused_before_its_body_is_looked_at(gw: LlmGateway) -> None:
    """403 whatever the body: a body the schema refuses gets no 400 naming the schema's rules."""
    cli(gw.gateway, "consumers", "create", "narrow", "--model=some-other-model")
    key, _ = create_key(gw.gateway, "narrow")
    auth = f"Authorization: Bearer {key}\r\n"
    seen = len(gw.stack.openai.requests)
    for body in ({"text": "hi"}, {"text": 3}, b"not json"):
        refused = post(gw, "/secured/private", body, auth)
        assert refused.status == 403, refused.body
        assert json.loads(refused.body)["type"].endswith("model-not-allowed")
        assert b"prompt-model" not in refused.body  # the API's model is none of the client's business
    assert len(gw.stack.openai.requests) == seen


def test_wrong_method_and_unknown_path(gw: LlmGateway) -> None:
    resp = request(gw.gateway.port, b"GET /prompts/echo HTTP/1.1\r\nHost: test\r\n\r\n")
    assert resp.status == 405 and resp.header(b"allow") == b"POST"
    assert post(gw, "/prompts/nothing", {}).status == 404


def test_admin_lists_the_apis_with_their_schemas(gw: LlmGateway) -> None:
    listed = {api["name"]: api for api in admin(gw, "/prompt-apis")["prompt_apis"]}
    assert set(listed) == {"echo", "classify", "short", "short-json", "order", "private"}
    echo = listed["echo"]
    assert echo["path"] == "/prompts/echo" and echo["method"] == "POST" and echo["model"] == "prompt-model"
    assert echo["routes"] == [{"name": "prompts", "auth": ["none"]}]
    assert echo["input_schema"]["required"] == ["text"]
    assert echo["output_schema"] is None and echo["context_window"] == 300
    assert listed["classify"]["output_schema"]["required"] == ["label"]
    assert listed["private"]["routes"] == [{"name": "secured", "auth": ["api_key"]}]


def test_openapi_document_is_valid_31(gw: LlmGateway, tmp_path: Path) -> None:
    doc = admin(gw, "/prompt-apis/openapi.json")
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] and doc["info"]["version"]
    assert set(doc["paths"]) == {
        "/prompts/echo",
        "/prompts/classify",
        "/prompts/short",
        "/prompts/short-json",
        "/prompts/order",
        "/secured/private",
    }
    schemes = doc["components"]["securitySchemes"]
    assert schemes == {
        "api_key": {"type": "http", "scheme": "bearer", "description": "a fastgw API key (fgw_...)"}
    }
    meta = validators.Draft202012Validator
    for item in doc["paths"].values():
        operation = item["post"]
        assert operation["operationId"]
        for name in (n for req in operation["security"] for n in req):
            assert name in schemes
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        meta.check_schema(body)
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        meta.check_schema(ok)
        for status, response in operation["responses"].items():
            assert status.isdigit() and response["description"]
            for media in response.get("content", {}).values():
                ref = media["schema"].get("$ref")
                if ref:
                    assert ref.startswith("#/components/schemas/")
                    assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    assert doc["paths"]["/secured/private"]["post"]["security"] == [{"api_key": []}]
    assert doc["paths"]["/prompts/echo"]["post"]["security"] == []
    result = doc["paths"]["/prompts/classify"]["post"]["responses"]["200"]["content"]["application/json"]
    assert result["schema"]["properties"]["result"]["properties"]["label"]["enum"] == ["spam", "ham"]
    # The same document from the command line, read from the config file.
    from tests.support.cli import fastgw

    out = fastgw("prompt-apis", "openapi", "--config", str(gw.gateway.config))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["paths"] == doc["paths"]


DEMO_API = """
[[routes]]
name = "prompts"
path = "/prompts"
kind = "prompt_api"
auth = "none"

[[prompt_api]]
name = "triage"
path = "/prompts/triage"
model = "demo-chat"
template = "Triage: {{ text }}"
input_schema = { type = "object", required = ["text"], properties = { text = { type = "string" } } }
output_schema = { type = "object", required = ["category", "note"], additionalProperties = false, \
properties = { category = { type = "string", enum = ["bug", "billing"] }, note = { type = "string" } } }
"""


def test_the_quick_start_demo_provider_answers_an_output_schema(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(demo_llm_config(free_port(), route='auth = "none"', extra=DEMO_API))
    body = json.dumps({"text": "it crashed"}).encode()
    head = f"POST /prompts/triage HTTP/1.1\r\nHost: test\r\ncontent-length: {len(body)}\r\n\r\n"
    resp = request(gw.port, head.encode() + body, timeout=10)
    assert resp.status == 200, resp.body
    assert json.loads(resp.body) == {"result": {"category": "bug", "note": "You said: Triage: it crashed"}}
