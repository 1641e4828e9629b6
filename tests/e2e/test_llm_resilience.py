"""Retries, provider keys, deadlines and bring-your-own-key as the openai SDK sees them, through a gateway
with ``[llm] retries = 1`` in front of the fake providers.

- A failure before the first byte is retried on the same target (a 500; a 429 after its Retry-After);
  a Retry-After over ``retry_wait_max`` moves on to the next target at once.
- A provider with two keys spreads requests over both; a key answered 429 rests while the other serves,
  and the access log names the key used (never the key itself).
- A stream whose first token is late falls back to the next target within the first-token bound; one that
  goes silent after its first token ends with an error event within the idle bound; a whole answer is
  bounded by the total deadline; a chain of slow calls by the request's (``request_timeout``).
- A route with ``byok_providers`` sends the client's own key (``x-fastgw-provider-key``) instead of the
  gateway's, to those providers only; any other route refuses that header and never forwards it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.llm_gateway import (
    OPENAI_KEY,
    LlmGateway,
    llm_record,
    running_llm_gateway,
    silent_listener,
    silent_provider,
)

SECOND_KEY = "sk-second-openai-key-for-tests"
CLIENT_KEY = "sk-client-own-key-for-byok-tests"
FIRST_TOKEN = 0.4  # oa-quick's first_token_timeout and idle_timeout
TOTAL = 0.5  # the slow-total target's total_timeout
CONNECT = 0.3  # the silent provider's connect_timeout (its upstream's own is 3 s)
SHORT = 0.2  # a total or first-token deadline shorter than CONNECT: it, not the connect's, cuts the connect
BACKOFF_MAX = 0.1
BUDGETED_CAP = 1_000_000  # the /budgeted route's tokens_per_day
REQUEST = 3.0  # [llm] request_timeout: longer than every chain of calls here but deadline-chain's
CHAIN_TOTAL = 2.0  # deadline-chain's targets' total_timeout: 4 calls of 2 s, past REQUEST
SLACK = 1.5  # scheduling, TLS and the fallback target's own answer, on a loaded CI machine


def extra(secrets: Path, silent_port: int) -> str:
    many_keys = "\n".join(
        f'            {{ name = "k{i}", key = {{ file = "{secrets / "second.key"}" }} }},' for i in range(6)
    )
    return f"""
        [llm]
        retries = 1
        request_timeout = {REQUEST}
        retry_backoff = 0.05
        retry_backoff_max = {BACKOFF_MAX}
        retry_wait_max = 2.0

{silent_provider(silent_port, CONNECT)}

        [[llm.providers]]
        name = "oa-keys"
        kind = "openai"
        upstream = "openai"
        base_path = "/v1"
        api_keys = [
            {{ name = "alpha", key = {{ file = "{secrets / "openai.key"}" }} }},
            {{ name = "beta", key = {{ file = "{secrets / "second.key"}" }} }},
        ]

        [[llm.providers]]
        name = "oa-many"
        kind = "openai"
        upstream = "openai"
        base_path = "/v1"
        api_keys = [
{many_keys}
        ]

        [[llm.providers]]
        name = "oa-stalling"
        kind = "openai"
        upstream = "openai"
        base_path = "/v1"
        api_key = {{ file = "{secrets / "openai.key"}" }}
        idle_timeout = {FIRST_TOKEN}

        [[llm.providers]]
        name = "oa-quick"
        kind = "openai"
        upstream = "openai"
        base_path = "/v1"
        api_key = {{ file = "{secrets / "openai.key"}" }}
        first_token_timeout = {FIRST_TOKEN}
        idle_timeout = {FIRST_TOKEN}

        [[llm.models]]
        name = "one-target"
        targets = [{{ provider = "oa", model = "gpt-4o-mini" }}]

        [[llm.models]]
        name = "long-hint"
        targets = [
            {{ provider = "oa", model = "gpt-4o" }},
            {{ provider = "an", model = "claude-sonnet-4-5", priority = 1 }},
        ]

        [[llm.models]]
        name = "day-hint"
        targets = [{{ provider = "oa", model = "gpt-4o-day-hint" }}]

        [[llm.models]]
        name = "two-keys"
        targets = [{{ provider = "oa-keys", model = "gpt-4o-mini" }}]

        [[llm.models]]
        name = "many-keys"
        targets = [
            {{ provider = "oa-many", model = "gpt-4o-mini" }},
            {{ provider = "an", model = "claude-sonnet-4-5", priority = 1 }},
        ]

        [[llm.models]]
        name = "stalls-then-falls-back"
        targets = [
            {{ provider = "oa-stalling", model = "fault-stall" }},
            {{ provider = "an", model = "claude-sonnet-4-5", priority = 1 }},
        ]

        [[llm.models]]
        name = "logprobs-somewhere"
        targets = [
            {{ provider = "an", model = "claude-sonnet-4-5" }},
            {{ provider = "oa", model = "gpt-4o-mini", priority = 1 }},
        ]

        [[llm.models]]
        name = "late-first-token"
        targets = [
            {{ provider = "oa-quick", model = "fault-slow-first-token" }},
            {{ provider = "an", model = "claude-sonnet-4-5", priority = 1 }},
        ]

        [[llm.models]]
        name = "stalls"
        targets = [{{ provider = "oa-quick", model = "fault-stall" }}]

        [[llm.models]]
        name = "slow-total"
        targets = [
            {{ provider = "oa", model = "fault-slow-first-token", total_timeout = {TOTAL} }},
            {{ provider = "an", model = "claude-sonnet-4-5", priority = 1 }},
        ]

        [[llm.models]]
        name = "short-total-stream"
        targets = [{{ provider = "oa", model = "gpt-4o-mini", total_timeout = {TOTAL} }}]

        [[llm.models]]
        name = "never-connects"
        targets = [
            {{ provider = "silent", model = "gpt-4o-mini" }},
            {{ provider = "an", model = "claude-sonnet-4-5", priority = 1 }},
        ]

        [[llm.models]]
        name = "budget-fallback"  # slow-total's shape on a target of its own (health is per target)
        targets = [
            {{ provider = "oa", model = "gpt-4o-budgeted", total_timeout = {TOTAL} }},
            {{ provider = "an", model = "claude-sonnet-4-5", priority = 1 }},
        ]

        [[llm.models]]
        name = "deadline-chain"  # two targets, each called twice (retries = 1): 4 x CHAIN_TOTAL unbounded
        targets = [
            {{ provider = "oa", model = "gpt-4o-deadline-a", total_timeout = {CHAIN_TOTAL} }},
            {{ provider = "oa", model = "gpt-4o-deadline-b", total_timeout = {CHAIN_TOTAL}, priority = 1 }},
        ]

        [[llm.models]]
        name = "slow-total-alone"
        targets = [{{ provider = "oa", model = "fault-slow-first-token", total_timeout = {TOTAL} }}]

        [[llm.models]]
        name = "late-head-alone"
        targets = [{{ provider = "an", model = "claude-sonnet-4-5", first_token_timeout = {FIRST_TOKEN} }}]

        [[llm.models]]
        name = "never-connects-alone"
        targets = [{{ provider = "silent", model = "gpt-4o-mini" }}]

        [[llm.models]]
        name = "never-connects-short-total"
        targets = [{{ provider = "silent", model = "gpt-4o-mini", total_timeout = {SHORT} }}]

        [[llm.models]]
        name = "never-connects-short-first-token"
        targets = [{{ provider = "silent", model = "gpt-4o-mini", first_token_timeout = {SHORT} }}]

        [[llm.models]]
        name = "error-body-stalls"
        targets = [{{ provider = "oa-quick", model = "fault-error-stall" }}]

        [[llm.models]]
        name = "error-body-trickles"
        targets = [{{ provider = "oa-quick", model = "fault-error-trickle" }}]

        [[routes]]
        name = "byok"
        path = "/byok/v1"
        strip_prefix = true
        auth = "none"
        kind = "llm"
        handler = {{ byok_providers = ["oa"] }}

        [[routes]]
        name = "budgeted"
        path = "/budgeted/v1"
        strip_prefix = true
        auth = "none"
        kind = "llm"

        [[routes.handler.budgets]]
        name = "day-tokens"
        key = "route"
        tokens_per_day = {BUDGETED_CAP}
        """


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmGateway]:
    directory = tmp_path_factory.mktemp("resilience")
    secrets = directory / "secrets"
    secrets.mkdir()
    (secrets / "second.key").write_text(SECOND_KEY + "\n")
    # A listener that never accepts: the kernel completes the TCP handshake, nobody answers the TLS one,
    # so no connection ever carries a request.
    with (
        silent_listener() as silent,
        running_llm_gateway(directory, extra(secrets, silent.getsockname()[1])) as running,
    ):
        running.stack.openai.other_keys.update({SECOND_KEY, CLIENT_KEY})
        yield running


@pytest.fixture
def sdk(gw: LlmGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key="any", max_retries=0, timeout=20) as opened:
        yield opened


def ask(sdk: openai.OpenAI, model: str, **kw: object) -> Mapping[str, str]:
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], max_tokens=32, **kw
    )
    assert raw.parse().choices[0].message.content
    return raw.headers


def test_a_500_is_retried_on_the_same_target(gw: LlmGateway, sdk: openai.OpenAI) -> None:
    fake = gw.stack.openai
    seen = len(fake.requests)
    fake.faults.append("500")
    headers = ask(sdk, "one-target")
    assert headers["x-fastgw-llm-target"] == "oa/gpt-4o-mini; attempts=2"
    assert len(fake.requests) == seen + 2
    record = llm_record(gw.gateway, headers)
    assert (record["attempts"], record["key"]) == (2, "0")


def test_a_429_is_retried_after_its_retry_after(gw: LlmGateway, sdk: openai.OpenAI) -> None:
    fake = gw.stack.openai
    fake.retry_after = "1"
    fake.faults.append("429")
    began = time.monotonic()
    headers = ask(sdk, "one-target")
    elapsed = time.monotonic() - began
    assert headers["x-fastgw-llm-target"] == "oa/gpt-4o-mini; attempts=2"
    assert 1.0 <= elapsed < 1.0 + SLACK


def test_a_retry_after_over_the_bound_moves_on_at_once(gw: LlmGateway, sdk: openai.OpenAI) -> None:
    fake = gw.stack.openai
    fake.retry_after = "30"
    fake.faults.append("429")
    began = time.monotonic()
    headers = ask(sdk, "long-hint")
    assert time.monotonic() - began < SLACK
    assert headers["x-fastgw-llm-target"] == "an/claude-sonnet-4-5; attempts=2"
    fake.retry_after = "1"


def test_a_provider_hint_past_the_cool_down_reaches_the_client_as_the_cool_down(
    gw: LlmGateway, sdk: openai.OpenAI
) -> None:
    """A provider's 429 naming a reset hours away (a daily quota's) went on to the client as that long a
    Retry-After, while the gateway tries the target again after ``cool_down_max`` (300 s by default):
    the client waited on for nothing. The client's hint is now the gateway's own."""
    fake = gw.stack.openai
    fake.retry_after = "5000"
    fake.faults.append("429")
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            ask(sdk, "day-hint")
    finally:
        fake.retry_after = "1"
    assert caught.value.response.headers["retry-after"] == "300"
    assert caught.value.response.headers["x-fastgw-llm-target"] == "oa/gpt-4o-day-hint; attempts=1"


def test_two_keys_share_the_requests_and_a_rate_limited_one_rests(gw: LlmGateway, sdk: openai.OpenAI) -> None:
    fake = gw.stack.openai
    used = [llm_record(gw.gateway, ask(sdk, "two-keys"))["key"] for _ in range(16)]
    assert set(used) == {"alpha", "beta"}  # both weights 1: each missing 16 times is a 2^-15 chance

    fake.limited_keys[SECOND_KEY] = "30"
    try:
        seen = len(fake.requests)
        records = [llm_record(gw.gateway, ask(sdk, "two-keys")) for _ in range(12)]
        assert {r["key"] for r in records} == {"alpha"}
        # beta answered 429 at most once: then it rests while alpha serves (a switch, at once)
        beta = [r for r in fake.requests[seen:] if r.headers["authorization"] == f"Bearer {SECOND_KEY}"]
        assert len(beta) <= 1
        assert sorted(r["attempts"] for r in records) == [1] * (12 - len(beta)) + [2] * len(beta)
    finally:
        fake.limited_keys.clear()
    log = gw.gateway.access_log.read_text()
    assert SECOND_KEY not in log and OPENAI_KEY not in log


def test_keys_limited_together_leave_an_attempt_for_the_fallback(gw: LlmGateway, sdk: openai.OpenAI) -> None:
    """Six keys of one provider (one organisation's: limited together) took every attempt of the
    request, switching key after key, and its fallback was never tried: the client got a 429. Now the
    switches stop while one attempt is left for each target after it; the failed answer names the last
    target and the attempts (x-fastgw-llm-target, on errors too)."""
    fake = gw.stack.openai
    fake.limited_keys[SECOND_KEY] = "30"
    try:
        headers = ask(sdk, "many-keys")
        assert headers["x-fastgw-llm-target"] == "an/claude-sonnet-4-5; attempts=6"
    finally:
        fake.limited_keys.clear()
    fake.faults.extend(["500", "500"])  # the one target fails its try and its retry
    with pytest.raises(openai.APIStatusError) as failed:
        ask(sdk, "one-target")
    assert failed.value.response.headers["x-fastgw-llm-target"] == "oa/gpt-4o-mini; attempts=2"


def test_a_target_whose_stream_failed_midway_is_set_aside(gw: LlmGateway, sdk: openai.OpenAI) -> None:
    """A stream that failed after its first byte (cannot fall back: the client has it) never counted
    against its target: every stream kept going to a provider whose streams kept dying."""
    messages: Any = [{"role": "user", "content": "stream then stall"}]
    stream = sdk.chat.completions.create(model="stalls-then-falls-back", messages=messages, stream=True)
    with stream, pytest.raises(openai.APIError):
        for _ in stream:
            pass
    assert stream.response.headers["x-fastgw-llm-target"] == "oa-stalling/fault-stall; attempts=1"
    again = sdk.chat.completions.create(model="stalls-then-falls-back", messages=messages, stream=True)
    with again:
        assert list(again)
    assert again.response.headers["x-fastgw-llm-target"] == "an/claude-sonnet-4-5; attempts=1"


def test_a_parameter_one_target_cannot_honour_goes_to_one_that_can(
    gw: LlmGateway, sdk: openai.OpenAI
) -> None:
    """Anthropic has no logprobs: a model whose first target was Anthropic answered every such request
    400, with an OpenAI target behind it that could take it. The 400 comes only when no target can."""
    headers = ask(sdk, "logprobs-somewhere", logprobs=True)
    assert headers["x-fastgw-llm-target"] == "oa/gpt-4o-mini; attempts=1"
    with pytest.raises(openai.BadRequestError) as refused:
        ask(sdk, "late-head-alone", logprobs=True)
    assert "logprobs" in str(refused.value)


def test_a_late_first_token_falls_back_within_the_first_token_bound(
    gw: LlmGateway, sdk: openai.OpenAI
) -> None:
    fake = gw.stack.openai
    fake.first_token_delay = 5.0
    try:
        began = time.monotonic()
        with sdk.chat.completions.with_streaming_response.create(
            model="late-first-token",
            messages=[{"role": "user", "content": "stream something"}],
            max_tokens=32,
            stream=True,
        ) as response:
            first_byte = time.monotonic() - began
            text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    finally:
        fake.first_token_delay = 0.05
    assert text
    # the slow target twice (retries = 1), each given FIRST_TOKEN, then the next target answers
    assert 2 * FIRST_TOKEN <= first_byte < 2 * FIRST_TOKEN + BACKOFF_MAX + SLACK
    assert response.headers["x-fastgw-llm-target"] == "an/claude-sonnet-4-5; attempts=3"


def test_a_stream_silent_after_its_first_token_ends_within_the_idle_bound(
    gw: LlmGateway, sdk: openai.OpenAI
) -> None:
    stream = sdk.chat.completions.create(
        model="stalls", messages=[{"role": "user", "content": "stream then stall"}], stream=True
    )
    with stream:
        chunks = iter(stream)
        assert next(chunks).choices
        first_at = time.monotonic()
        with pytest.raises(openai.APIError) as caught:
            next(chunks)
        silent = time.monotonic() - first_at
    assert FIRST_TOKEN - 0.05 <= silent < FIRST_TOKEN + SLACK
    assert "127.0.0.1" not in str(caught.value)
    record = llm_record(gw.gateway, stream.response.headers)
    assert (record["error"], record["attempts"]) == ("idle_timeout", 1)


def test_a_stream_past_its_total_deadline_ends_with_an_error_event(
    gw: LlmGateway, sdk: openai.OpenAI
) -> None:
    fake = gw.stack.openai
    fake.chunk_delay = 0.2  # a piece each 0.2 s: the answer takes longer than TOTAL
    received = []
    try:
        began = time.monotonic()
        with (
            pytest.raises(openai.APIError),
            sdk.chat.completions.create(
                model="short-total-stream", messages=[{"role": "user", "content": "stream"}], stream=True
            ) as stream,
        ):
            for chunk in stream:
                received.append(chunk)
        ended = time.monotonic() - began
    finally:
        fake.chunk_delay = 0.0
    assert received  # bytes went out first: the deadline ends the stream, no fallback
    assert TOTAL <= ended < TOTAL + SLACK
    record = llm_record(gw.gateway, stream.response.headers)
    assert (record["error"], record["attempts"]) == ("total_timeout", 1)


def test_a_whole_answer_is_bounded_by_the_total_deadline(gw: LlmGateway, sdk: openai.OpenAI) -> None:
    fake = gw.stack.openai
    fake.first_token_delay = 5.0
    try:
        began = time.monotonic()
        headers = ask(sdk, "slow-total")
        elapsed = time.monotonic() - began
    finally:
        fake.first_token_delay = 0.05
    assert headers["x-fastgw-llm-target"] == "an/claude-sonnet-4-5; attempts=3"
    assert 2 * TOTAL <= elapsed < 2 * TOTAL + BACKOFF_MAX + SLACK


def test_a_fallback_after_calls_sent_and_never_answered_counts_an_estimate_for_each(gw: LlmGateway) -> None:
    """The first target is called twice (retries = 1), each call sent and cut at total_timeout (the
    provider may bill both), then the fallback answers. A token budget counted the fallback's usage only;
    now an estimate for each unanswered call too."""
    fake = gw.stack.openai
    url = gw.base_url.removesuffix("/v1") + "/budgeted/v1"
    with openai.OpenAI(base_url=url, api_key="any", max_retries=0, timeout=20) as budgeted:
        fake.first_token_delay = 5.0
        fake.faults.extend(["slow-first-token"] * 2)
        try:
            raw = budgeted.chat.completions.with_raw_response.create(
                model="budget-fallback", messages=[{"role": "user", "content": "hello there"}], max_tokens=32
            )
        finally:
            fake.first_token_delay = 0.05
            fake.faults.clear()
        assert raw.headers["x-fastgw-llm-target"] == "an/claude-sonnet-4-5; attempts=3"
        answer = raw.parse()
        assert answer.usage is not None
        estimate = BUDGETED_CAP - int(raw.headers["x-ratelimit-remaining-tokens"])  # the first request
        again = budgeted.chat.completions.with_raw_response.create(  # the same estimate
            model="budget-fallback", messages=[{"role": "user", "content": "hello there"}], max_tokens=32
        )
        counted = BUDGETED_CAP - int(again.headers["x-ratelimit-remaining-tokens"]) - estimate
        assert counted == answer.usage.total_tokens + 2 * estimate, (counted, estimate)


def test_request_timeout_bounds_a_chain_of_slow_calls(gw: LlmGateway, sdk: openai.OpenAI) -> None:
    """Each call cut at its own total_timeout, then retried, then the fallback's two: without a bound over
    the request, 4 x 2 s before the client heard anything. request_timeout (3 s) ends the chain: the
    call in flight is cut to what is left, no further call is made, and the client gets a 504."""
    fake = gw.stack.openai
    fake.first_token_delay = 5.0
    fake.faults.extend(["slow-first-token"] * 4)
    began = time.monotonic()
    try:
        with pytest.raises(openai.APIStatusError) as refused:
            ask(sdk, "deadline-chain")
    finally:
        fake.first_token_delay = 0.05
        fake.faults.clear()
    elapsed = time.monotonic() - began
    assert refused.value.status_code == 504 and "request_timeout" in str(refused.value), refused.value
    assert REQUEST <= elapsed < REQUEST + SLACK, elapsed


def test_a_provider_that_never_connects_falls_back_within_the_connect_bound(
    gw: LlmGateway, sdk: openai.OpenAI
) -> None:
    began = time.monotonic()
    headers = ask(sdk, "never-connects")
    elapsed = time.monotonic() - began
    assert headers["x-fastgw-llm-target"] == "an/claude-sonnet-4-5; attempts=3"
    assert 2 * CONNECT <= elapsed < 2 * CONNECT + BACKOFF_MAX + SLACK


@pytest.mark.parametrize(
    ("model", "stream", "deadline", "bound"),
    [
        ("slow-total-alone", False, "total_timeout", TOTAL),
        ("late-head-alone", True, "first_token_timeout", FIRST_TOKEN),
        ("never-connects-alone", False, "connect_timeout", CONNECT),
        ("never-connects-short-total", False, "total_timeout", SHORT),
        ("never-connects-short-first-token", True, "first_token_timeout", SHORT),
        ("error-body-stalls", True, "first_token_timeout", FIRST_TOKEN),  # a 500 head, its body stalled
        # its body a byte every 0.3 s: each wait within the first-token deadline, the whole body not
        ("error-body-trickles", True, "first_token_timeout", FIRST_TOKEN),
    ],
)
def test_a_deadline_missed_before_the_answer_head_is_named_in_the_log(
    gw: LlmGateway, sdk: openai.OpenAI, model: str, stream: bool, deadline: str, bound: float
) -> None:
    """Before the answer's first byte (a silent connect, a late head, an error body that stalls or
    trickles) the 504 and the access log name the deadline that ran out, as they do once the answer
    began, not the upstream's generic timeout: a connect cut by a shorter total or first-token deadline is
    theirs. A stream's error body comes whole within the first-token deadline: one trickled a byte per
    wait held the attempt until the total deadline (10 minutes by default)."""
    gw.stack.openai.first_token_delay = 5.0
    gw.stack.anthropic.slow_seconds = 5.0
    gw.stack.anthropic.faults.extend(["slow_first_token"] * 2)  # the attempt and its retry
    try:
        began = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            # raised by create() for a stream too: the 504 is the answer's head, before any event
            sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stream=stream
            )
        elapsed = time.monotonic() - began
    finally:
        gw.stack.openai.first_token_delay = 0.05
        gw.stack.anthropic.slow_seconds = 0.5
        gw.stack.anthropic.faults.clear()
    assert caught.value.status_code == 504
    assert 2 * bound <= elapsed < 2 * bound + BACKOFF_MAX + SLACK  # retries = 1: two attempts
    assert "127.0.0.1" not in str(caught.value)
    record = llm_record(gw.gateway, caught.value.response.headers)
    assert (record["error"], record["attempts"]) == (deadline, 2)


def test_byok_route_sends_the_clients_own_key_and_only_to_its_providers(gw: LlmGateway) -> None:
    fake = gw.stack.openai
    own = {"x-fastgw-provider-key": CLIENT_KEY}
    with openai.OpenAI(
        base_url=f"{gw.gateway.url}/byok/v1", api_key="fastgw-credential", max_retries=0, timeout=20
    ) as byok:
        seen = len(fake.requests)
        headers = ask(byok, "chat-openai", extra_headers=own)
        (sent,) = fake.requests[seen:]
        assert sent.headers["authorization"] == f"Bearer {CLIENT_KEY}"
        assert "x-fastgw-provider-key" not in sent.headers
        assert llm_record(gw.gateway, headers)["key"] == "client"

        ask(byok, "chat-openai")  # without the header: the gateway's key
        assert fake.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"

        seen_by_anthropic = len(gw.stack.anthropic.requests)
        with pytest.raises(openai.BadRequestError) as caught:
            ask(byok, "chat-anthropic", extra_headers=own)  # "an" is not in byok_providers
        assert caught.value.code == "provider_key_not_accepted"
        assert len(gw.stack.anthropic.requests) == seen_by_anthropic
    # count_tokens too: the client's key is never sent to a provider it is not for (nor the gateway's used)
    count = urllib.request.Request(
        f"{gw.gateway.url}/byok/v1/messages/count_tokens",
        data=json.dumps(
            {"model": "chat-anthropic", "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01", **own},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(count, timeout=20)
    refused.value.close()  # its answer's socket
    assert refused.value.code == 400
    assert len(gw.stack.anthropic.requests) == seen_by_anthropic
    assert CLIENT_KEY not in gw.gateway.access_log.read_text()


def test_a_route_without_byok_refuses_the_header_and_never_forwards_it(
    gw: LlmGateway, sdk: openai.OpenAI
) -> None:
    fake = gw.stack.openai
    seen = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, "chat-openai", extra_headers={"x-fastgw-provider-key": CLIENT_KEY})
    assert caught.value.code == "provider_key_not_accepted"
    assert len(fake.requests) == seen
    assert all("x-fastgw-provider-key" not in r.headers for r in fake.requests)  # on no route, ever


def test_the_call_after_a_large_answer_is_answered_not_left_waiting(
    gw: LlmGateway, sdk: openai.OpenAI
) -> None:
    """A whole answer over the reply's 256 KiB buffer paused the provider connection's reading, and when
    its end came in that same read the connection went back to the pool paused: the next call on it was
    sent and never read, until its total deadline (600 s here: the SDK's 20 s timeout ran out first)."""
    gw.stack.openai.texts.append("y" * 1_000_000)
    long = sdk.chat.completions.create(
        model="one-target", messages=[{"role": "user", "content": "a long one"}]
    )
    assert len(long.choices[0].message.content or "") == 1_000_000
    for _ in range(3):  # each on the pooled connection (LIFO: the one just released)
        began = time.monotonic()
        ask(sdk, "one-target")
        assert time.monotonic() - began < SLACK
