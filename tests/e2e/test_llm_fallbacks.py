"""Fallbacks as the openai SDK sees them: a model with two targets whose first refuses (429 with
Retry-After, 529, 500, 408, connection refused) or answers a 200 that is no completion (an HTML page, an empty
or truncated body; a stream request too) answers from the second, the ``x-fastgw-llm-target`` header and
the access log name it with attempts=2, and the refusing target is skipped while set aside. After the
first byte nothing falls back: a stream that breaks ends with an error event. A client that hangs up
mid-stream makes the gateway hang up on the provider at once."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import openai
import pytest

from tests.support.llm_gateway import LlmGateway, llm_record, metric, running_llm_gateway, scrape
from tests.support.waiting import wait_until

FIRST_FAILS = {  # model -> the failing first target (provider, provider model)
    "fb-429": ("oa", "fault-429"),
    "fb-529": ("oa", "fault-529"),
    "fb-500": ("oa", "fault-500"),
    "fb-408": ("oa", "fault-408"),  # the provider's own timeout: as a 5xx, never the request's fault
    "fb-refused": ("down", "gpt-4o-mini"),
    "fb-html": ("oa", "fault-html"),  # a 200 that is no completion: the provider's fault, as a 5xx is
    "fb-empty": ("oa", "fault-empty"),
    "fb-truncated": ("oa", "fault-truncated"),
}
BROKEN_STREAMS = ("disconnect", "malformed-event", "stall")
UNUSABLE_200 = ("html", "empty")  # faults queued on the fake for a stream request
# A 200 that is an answer, or the request's fault: another target would repeat it (and bill it again).
NO_FALLBACK = {"nofb-error-200": "fault-error-200", "nofb-huge": "fault-huge-response"}


def then_anthropic(name: str, provider: str, model: str) -> str:
    """A model whose first target is ``provider``'s ``model`` and whose fallback is the fake Anthropic."""
    return f"""
        [[llm.models]]
        name = "{name}"
        targets = [
            {{ provider = "{provider}", model = "{model}", priority = 0 }},
            {{ provider = "an", model = "claude-sonnet-4-5", priority = 1 }},
        ]
        """


def fallback_models() -> str:
    tables = [then_anthropic(name, provider, model) for name, (provider, model) in FIRST_FAILS.items()]
    tables += [then_anthropic(f"broken-{fault}", "oa", f"fault-{fault}") for fault in BROKEN_STREAMS]
    tables += [then_anthropic(name, "oa", model) for name, model in NO_FALLBACK.items()]
    # A provider model of their own: the target set aside by one test is not another's.
    tables += [then_anthropic(f"fbs-{fault}", "oa", f"stream-{fault}") for fault in UNUSABLE_200]
    tables.append(then_anthropic("fb-reload", "oa", "gpt-4o-reload"))  # refuses by a queued fault
    tables.append(
        """
        [[llm.models]]
        name = "usage-then-stall"
        targets = [{ provider = "oa", model = "fault-stall-after-usage" }]

        [[llm.models]]
        name = "slow-head"
        targets = [{ provider = "oa", model = "fault-slow-first-token" }]
        """
    )
    return "".join(tables)


@pytest.fixture(scope="module")
def fb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    with running_llm_gateway(tmp_path_factory.mktemp("fallbacks"), fallback_models()) as running:
        running.stack.openai.retry_after = "30"  # the 429 target stays set aside for the whole module
        yield running


@pytest.fixture
def sdk(fb: LlmGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fb.base_url, api_key="any", max_retries=0, timeout=20) as opened:
        yield opened


def ask(sdk: openai.OpenAI, model: str) -> tuple[str, str, Mapping[str, str]]:
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], max_tokens=32
    )
    answer = raw.parse()
    assert answer.choices[0].message.content
    return raw.headers["x-fastgw-llm-target"], answer.model, raw.headers


@pytest.mark.parametrize("model", list(FIRST_FAILS))
def test_a_refusing_first_target_falls_back_then_is_set_aside(
    fb: LlmGateway, sdk: openai.OpenAI, model: str
) -> None:
    seen_by_anthropic = len(fb.stack.anthropic.requests)
    seen_by_openai = len(fb.stack.openai.requests)
    target, answered_model, headers = ask(sdk, model)
    assert target == "an/claude-sonnet-4-5; attempts=2"
    provider, provider_model = FIRST_FAILS[model]
    if provider == "oa":  # the first target really was asked, and refused
        assert [r.json["model"] for r in fb.stack.openai.requests[seen_by_openai:]] == [provider_model]
    assert answered_model == model
    assert len(fb.stack.anthropic.requests) == seen_by_anthropic + 1
    record = llm_record(fb.gateway, headers)
    assert (record["provider"], record["attempts"], record["model"]) == ("an", 2, model)
    assert record["prompt_tokens"] == fb.stack.anthropic.answers[-1].usage["input_tokens"]

    # Set aside (Retry-After 30 s, or the cool-down): the next request goes straight to the second.
    seen_by_openai = len(fb.stack.openai.requests)
    target, _, _ = ask(sdk, model)
    assert target == "an/claude-sonnet-4-5; attempts=1"
    assert len(fb.stack.openai.requests) == seen_by_openai


def test_a_target_set_aside_stays_set_aside_across_a_reload(fb: LlmGateway, sdk: openai.OpenAI) -> None:
    """A reload built the routes anew and their targets' health with them: a provider that had just
    answered 429 with Retry-After 30 was asked again by the next request, as if it had never refused."""
    fb.stack.openai.faults.append("429")
    target, _, _ = ask(sdk, "fb-reload")
    assert target == "an/claude-sonnet-4-5; attempts=2"
    gw = fb.gateway
    reloads = gw.stderr().count("reload (SIGHUP) complete")
    gw.config.write_text(gw.config.read_text() + then_anthropic("fb-reload-marker", "oa", "gpt-4o-mini"))
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.stderr().count("reload (SIGHUP) complete") > reloads, 10, "the reload")
    seen_by_openai = len(fb.stack.openai.requests)
    target, _, _ = ask(sdk, "fb-reload")  # the same connection, so the same worker, on the new snapshot
    assert target == "an/claude-sonnet-4-5; attempts=1"
    assert len(fb.stack.openai.requests) == seen_by_openai


@pytest.mark.parametrize("model", list(NO_FALLBACK))
def test_an_error_object_in_a_200_or_an_answer_over_the_bound_does_not_fall_back(
    fb: LlmGateway, sdk: openai.OpenAI, model: str
) -> None:
    seen_by_anthropic = len(fb.stack.anthropic.requests)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(sdk, model)
    assert caught.value.status_code == 502
    assert len(fb.stack.anthropic.requests) == seen_by_anthropic
    record = llm_record(fb.gateway, caught.value.response.headers)
    assert (record["attempts"], record["provider"]) == (1, "oa")


@pytest.mark.parametrize("fault", UNUSABLE_200)
def test_a_stream_request_answered_with_a_200_that_is_no_stream_falls_back(
    fb: LlmGateway, sdk: openai.OpenAI, fault: str
) -> None:
    """The first target answers the stream request with an HTML page (or nothing) and status 200: the
    client has no byte yet, so the second target streams the answer."""
    seen_by_anthropic = len(fb.stack.anthropic.requests)
    fb.stack.openai.faults.append(fault)
    raw = sdk.chat.completions.with_raw_response.create(
        model=f"fbs-{fault}", messages=[{"role": "user", "content": "stream it"}], max_tokens=32, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert text
    assert raw.headers["x-fastgw-llm-target"] == "an/claude-sonnet-4-5; attempts=2"
    assert fb.stack.openai.requests[-1].json["model"] == f"stream-{fault}"  # it was asked, and failed
    assert len(fb.stack.anthropic.requests) == seen_by_anthropic + 1
    record = llm_record(fb.gateway, raw.headers)
    assert (record["provider"], record["attempts"], record.get("error")) == ("an", 2, None)


@pytest.mark.parametrize("fault", ["disconnect", "malformed-event"])
def test_a_stream_broken_after_the_first_byte_ends_with_an_error_event(
    fb: LlmGateway, sdk: openai.OpenAI, fault: str
) -> None:
    seen_by_anthropic = len(fb.stack.anthropic.requests)
    # The fake's pieces apart in time, so the first chunk reaches the client before the break (pieces
    # read together would break before any byte left: that is answered with an error status instead).
    fb.stack.openai.chunk_delay = 0.05
    received = []
    error: openai.APIError | None = None
    try:
        with sdk.chat.completions.create(
            model=f"broken-{fault}",
            messages=[{"role": "user", "content": "stream something"}],
            max_tokens=32,
            stream=True,
        ) as stream:
            for chunk in stream:
                received.append(chunk)
    except openai.APIError as caught:
        error = caught
    finally:
        fb.stack.openai.chunk_delay = 0.0
    if error is None:  # the break came before any byte left: the second target answered (tested above)
        assert len(fb.stack.anthropic.requests) == seen_by_anthropic + 1
        return
    assert received, "an error status without a fallback: the client had no byte yet"
    assert "127.0.0.1" not in str(error) and str(fb.stack.openai.port) not in str(error)
    assert len(fb.stack.anthropic.requests) == seen_by_anthropic  # no fallback after the first byte
    record = llm_record(fb.gateway, stream.response.headers)
    assert record["attempts"] == 1 and record["provider"] == "oa" and record["error"]
    ask(sdk, "chat-openai")  # the gateway keeps serving


def test_client_hangup_mid_stream_closes_the_provider_connection_at_once(
    fb: LlmGateway, sdk: openai.OpenAI
) -> None:
    """The fake streams one chunk then stalls until its client hangs up: it sees the gateway hang up as
    soon as the SDK closes the stream (the provider stops billing), and the record says the client left."""
    hangups = fb.stack.openai.hangups
    stream = sdk.chat.completions.create(
        model="broken-stall", messages=[{"role": "user", "content": "stream then stall"}], stream=True
    )
    first = next(iter(stream))
    assert first.choices
    time.sleep(0.2)  # the stall: the provider sends nothing more
    assert fb.stack.openai.hangups == hangups
    closed_at = time.monotonic()
    stream.close()
    wait_until(lambda: fb.stack.openai.hangups > hangups, 2.0, "the gateway to hang up on the provider")
    assert time.monotonic() - closed_at < 1.0
    # Logged as cut short by the client, not as an answer served whole (its head said 200).
    assert llm_record(fb.gateway, stream.response.headers)["error"] == "client_closed"
    ask(sdk, "chat-openai")


def test_a_client_gone_after_the_usage_event_is_counted_in_full(fb: LlmGateway, sdk: openai.OpenAI) -> None:
    """The provider streamed every event, its usage included, then stalls before [DONE]; the client
    hangs up having read the usage. The provider billed those tokens: the exchange records them (the
    handler's Task is cancelled by the hang-up while it waits for the stream's end)."""
    raw = sdk.chat.completions.with_raw_response.create(
        model="usage-then-stall",
        messages=[{"role": "user", "content": "count me then stall"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    stream = raw.parse()
    usage = next(chunk.usage for chunk in stream if chunk.usage is not None)
    stream.close()
    record = llm_record(fb.gateway, raw.headers)
    assert (record.get("prompt_tokens"), record.get("completion_tokens")) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


def test_no_target_left_is_a_clear_error(tmp_path: Path) -> None:
    """Both targets refused and the second the same: the last provider error reaches the client."""
    extra = """
        [[llm.models]]
        name = "nowhere"
        targets = [{ provider = "down", model = "a" }, { provider = "down", model = "b", priority = 1 }]
        """
    with (
        running_llm_gateway(tmp_path, extra) as running,
        openai.OpenAI(base_url=running.base_url, api_key="any", max_retries=0, timeout=20) as sdk,
    ):
        with pytest.raises(openai.APIStatusError) as caught:
            ask(sdk, "nowhere")
        assert caught.value.status_code in (502, 503)
        assert str(running.stack.dead_port) not in caught.value.message
        assert "127.0.0.1" not in caught.value.message
        assert llm_record(running.gateway, caught.value.response.headers)["attempts"] == 2
        ask(sdk, "chat-openai")


def test_client_hangup_before_the_answer_head_is_logged_as_the_client_leaving(fb: LlmGateway) -> None:
    """A client that gives up while the provider has not answered yet: the record said no error, so the
    access log's 499 counted in the metrics as a refused request (outcome invalid_request)."""
    fb.stack.openai.first_token_delay = 3.0  # fault-slow-first-token: the whole answer waits this long
    try:
        with (
            openai.OpenAI(base_url=fb.base_url, api_key="any", max_retries=0, timeout=0.5) as impatient,
            pytest.raises(openai.APITimeoutError),
        ):
            impatient.chat.completions.create(model="slow-head", messages=[{"role": "user", "content": "hi"}])
    finally:
        fb.stack.openai.first_token_delay = 0.05

    def record() -> dict[str, object] | None:
        return next(
            (r for r in fb.gateway.log_records() if (r.get("llm") or {}).get("model") == "slow-head"), None
        )

    line = wait_until(record, 5.0, "the hung-up request's record")
    assert (line["status"], line["llm"]["error"]) == (499, "client_closed"), line  # type: ignore[index]
    wait_until(
        lambda: metric(
            scrape(fb.admin_port), "fastgw_llm_requests_total", model="slow-head", outcome="client_closed"
        ),
        5.0,
        "the metrics to count the hang-up as the client leaving",
    )
