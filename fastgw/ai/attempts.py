"""The target loop of the llm handler, shared by chat, messages and embeddings: which target and key
each attempt uses, when to retry the same target, when to move on, and when to give up.

Before the first byte reached the client, a failure that may go elsewhere (a connect error, a timeout,
a malformed answer, or a provider status in ``[llm] fallback_on``) is retried on the same target up to
``[llm] retries`` times, after a back-off with full jitter (``retry_backoff`` doubled per retry, at most
``retry_backoff_max``) or the provider's own Retry-After / x-ratelimit-reset-* when longer; a hint longer
than ``retry_wait_max`` is not waited for: the request moves on to the next target at once. A 429 on one
of several provider keys sets that key aside and tries the same target again at once with another key.
Every attempt counts: a request makes at most ``max_attempts * (1 + retries)`` of them, over at most
``max_attempts`` targets. Once the client has bytes, nothing is retried: the relay ends the answer with an
error event in the client's format.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from fastgw.ai.adapter import UNUSABLE_ANSWERS, Adapter, InvalidRequestError, ProviderError, ProviderRequest
from fastgw.ai.config import LlmConfig, Model, Target, auth_headers
from fastgw.ai.provider_calls import ERROR_BODY_MAX, read_reply, reply_headers, send_request
from fastgw.ai.record import LlmRecord
from fastgw.ai.resilience import Deadlines, ProviderKey
from fastgw.ai.routing import WORKER_KEYS, WORKER_TARGETS, KeyHealth, TargetHealth, plan
from fastgw.handler_api import ResponseWriter, UpstreamReply, Upstreams
from fastgw.proxy.upstream_errors import not_sent

# Builds the provider request of one attempt (raises InvalidRequestError: the client's fault, a 400).
Build = Callable[[Adapter, Target], ProviderRequest]
# Relays a 2xx answer to the client (raises ProviderError; once it wrote bytes, it ended the answer).
# ``began``: when the attempt sent its request (the stream deadlines count from it).
Relay = Callable[[UpstreamReply, Adapter, Target, float], Awaitable[None]]
# A call's deadlines that pass only after its request was sent (the connect's is not one of them).
SENT_THEN_TIMED_OUT: Final = frozenset({"first_token_timeout", "total_timeout", "idle_timeout"})
# Answers an error before any byte: status, message, param, code, retry_after.
Fail = Callable[[int, str, str | None, str | None, float | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class OwnKey:
    """The client's own provider key (bring-your-own-key), usable only with these providers."""

    value: str
    providers: frozenset[str]


class TargetLoop:
    """Per llm route and worker: the loop over its targets, with the worker's health of targets and keys
    (ai/routing.py: one state for every route and snapshot)."""

    __slots__ = ("adapters", "health", "keys", "llm", "rng")

    def __init__(self, llm: LlmConfig, adapters: Mapping[str, Adapter], rng: random.Random) -> None:
        self.llm = llm
        self.adapters = adapters
        # What this worker learned of its targets and keys, whichever route or snapshot learned it.
        self.health = TargetHealth(llm.resilience, WORKER_TARGETS)
        self.keys = KeyHealth(llm.resilience, WORKER_KEYS)
        self.rng = rng

    def _backoff(self, retry: int) -> float:
        settings = self.llm.resilience
        return self.rng.uniform(0.0, min(settings.retry_backoff_max, settings.retry_backoff * 2.0**retry))

    async def run(
        self,
        model: Model,
        upstreams: Upstreams,
        out: ResponseWriter,
        record: LlmRecord,
        build: Build,
        relay: Relay,
        fail: Fail,
        *,
        stream: bool = False,
        own_key: OwnKey | None = None,
        deadline: float = 0.0,
    ) -> None:
        """Call the model's targets until one answers; ``deadline`` (monotonic; 0: ``request_timeout``
        from now) bounds every call until an answer starts, shared by a prompt API's two runs."""
        settings = self.llm.resilience
        budget = self.llm.max_attempts * (1 + settings.retries)
        failure: ProviderError | None = None
        unsupported: InvalidRequestError | None = None  # what a target could not honour (another may)
        targets = plan(model, self.health, time.monotonic(), len(model.targets), self.rng)
        if own_key is not None:  # the client's key goes to the providers it is for, and nowhere else
            targets = [t for t in targets if t.provider.name in own_key.providers]
        chosen = targets[: self.llm.max_attempts]
        record.at_provider = False  # (a prompt API's second run: its first call was answered)
        # Every call of the request until an answer starts, back-offs included: without it a chain of
        # max_attempts x (1 + retries) calls, each up to total_timeout, could hold a client for hours.
        if not deadline:
            deadline = time.monotonic() + settings.request_timeout
        late = False
        for index, target in enumerate(chosen):
            retries = 0
            while budget > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    late = True
                    break
                budget -= 1
                if record.at_provider:  # the call before this one was sent and never answered
                    record.unanswered += 1
                record.attempts += 1
                record.provider, record.provider_model = target.provider.name, target.target.model
                adapter = self.adapters[target.provider.kind]
                key, credential = self.credential(target, own_key, record)
                began = time.monotonic()
                # The errors are kept and answered after the try statement: compiled by mypyc, a coroutine
                # suspended inside an except block leaves its exception as the thread's current one for
                # every other Task (tests/test_native.py checks that no compiled module does it).
                invalid: InvalidRequestError | None = None
                error: ProviderError | None = None
                relaying = built = False
                try:
                    request = build(adapter, target)
                    built = True
                    record.at_provider = True
                    limits = _within(target.deadlines, left, stream)
                    reply = await send_request(upstreams, target, request, credential, limits, stream=stream)
                    if reply.status >= 400:
                        text = await read_reply(reply, ERROR_BODY_MAX, limits=limits, stream=stream)
                        raise adapter.error(reply.status, reply_headers(reply), text)
                    relaying = True
                    await relay(reply, adapter, target, began)
                except InvalidRequestError as refused:
                    invalid = refused
                    record.at_provider = False
                except ProviderError as failed:
                    error = failed
                    # Refused by status or never connected: nothing billable ran. Sent and then no answer
                    # in time, or a 2xx answer that could not be used: the provider may have run it and
                    # bill it, so a budget keeps its estimate (relay.provider_may_bill).
                    record.at_provider = relaying or failed.kind in SENT_THEN_TIMED_OUT
                except asyncio.CancelledError as cancelled:
                    if not_sent(cancelled):
                        record.at_provider = False  # cut while connecting: the request never left
                    raise
                if invalid is not None and not built:
                    # This target cannot take the request (a parameter its provider lacks): the next
                    # planned one may; the 400 only if none can (a capability is never dropped).
                    record.attempts -= 1  # no call was made
                    budget += 1
                    unsupported = unsupported or invalid
                    break
                if invalid is not None:
                    await fail(400, invalid.message, invalid.param, invalid.code, None)
                    return
                if error is None:
                    self.health.succeeded(target)
                    return
                if out.started:  # the relay ended the answer with an error event
                    record.error = error.kind
                    self.health.set_aside(target, time.monotonic(), None)  # the provider's failure too
                    return
                if relaying and error.kind in UNUSABLE_ANSWERS:
                    # A 2xx answer the client never saw a byte of, and no answer at all (an HTML page,
                    # empty, malformed, truncated): the provider's fault, as a 5xx is.
                    error.retryable = True
                failure = error
                if not error.retryable or not (
                    error.provider_status == 0 or error.provider_status in self.llm.fallback_on
                ):
                    record.error = error.kind
                    await fail(error.status, error.message, None, None, self._client_hint(error))
                    return
                if time.monotonic() >= deadline:  # cut at the request's deadline: no time for another
                    late = True
                    break
                # The same target at once with another of its provider's keys, while the attempts left
                # keep one for each target after it: keys limited together (an organisation's) must
                # not spend the request's attempts before its fallback is tried.
                if self._other_key_ready(target, key, error) and budget > len(chosen) - index - 1:
                    continue
                wait = self._retry_wait(target, error, retries)
                if wait is None:
                    break  # the next target
                retries += 1
                await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            if late:
                break
        if late:
            record.error = "request_timeout"
            message = f"no provider answered within request_timeout ({settings.request_timeout:g}s)"
            await fail(504, message, None, None, None)
            return
        if failure is None and unsupported is not None:
            await fail(400, unsupported.message, unsupported.param, unsupported.code, None)
            return
        record.error = failure.kind if failure is not None else "no_target"
        if failure is not None:
            await fail(failure.status, failure.message, None, None, self._client_hint(failure))
        elif own_key is not None:
            message = f"no target of model '{model.name}' accepts the client's own provider key"
            await fail(400, message, None, "provider_key_not_accepted", None)
        else:
            await fail(503, f"no provider is available for model '{model.name}'", None, None, None)

    def credential(
        self, target: Target, own_key: OwnKey | None, record: LlmRecord
    ) -> tuple[ProviderKey | None, tuple[tuple[bytes, bytes], ...] | None]:
        """The key of this attempt and its header(s), named in ``record.key``; None: send_request's default
        (the stored key)."""
        provider = target.provider
        if own_key is not None:
            record.key = "client"
            return None, auth_headers(provider.kind, own_key.value, target.target.options)
        key = self.keys.choose(provider.name, provider.keys, time.monotonic(), self.rng)
        record.key = key.name if key is not None else ("stored" if provider.stored_key else "")
        return key, (key.headers if key is not None else None)

    def _other_key_ready(self, target: Target, key: ProviderKey | None, error: ProviderError) -> bool:
        """A 429 on one of several keys sets that key aside; True if another one is ready."""
        provider = target.provider
        if error.provider_status != 429 or key is None or len(provider.keys) < 2:
            return False
        now = time.monotonic()
        self.keys.rate_limited(provider.name, key, now, error.retry_after)
        return not self.keys.all_resting(provider.name, provider.keys, now)

    def _client_hint(self, error: ProviderError) -> float | None:
        """The provider's retry hint for the client's Retry-After, at most ``cool_down_max``: the gateway
        tries the target again by then, so a client told a day (a daily quota's reset) would wait on
        for nothing."""
        hint = error.retry_after
        return None if hint is None else min(hint, self.llm.resilience.cool_down_max)

    def _retry_wait(self, target: Target, error: ProviderError, retries: int) -> float | None:
        """Seconds to wait before trying ``target`` again, or None to move on (the target set aside)."""
        now = time.monotonic()
        settings = self.llm.resilience
        hint = error.retry_after
        if retries < settings.retries and (hint is None or hint <= settings.retry_wait_max):
            return max(self._backoff(retries), hint or 0.0)
        self.health.set_aside(target, now, hint)
        return None


def _within(limits: Deadlines, left: float, stream: bool) -> Deadlines:
    """A call's deadlines, none past the request's (``left`` seconds): the connect and the first token
    (a stream's answer starts there), and a whole answer's total (it starts when it is all read)."""
    total = limits.total if stream or limits.total <= left else left
    if limits.connect <= left and limits.first_token <= left and total == limits.total:
        return limits
    return Deadlines(min(limits.connect, left), min(limits.first_token, left), limits.idle, total)
