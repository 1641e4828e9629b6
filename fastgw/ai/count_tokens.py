"""``POST /v1/messages/count_tokens`` (Anthropic's format): the input tokens of a request, counted by the
model's first target whose provider can count (``Capabilities.count_tokens``); a model with none is a
400 naming the endpoint, never a guess. The route's guardrails (``guard``) see the prompt first, as for
chat: a blocked prompt is a 400, a masked one is counted masked (the provider never sees the value).
The credential is the handler's choice, as for chat: a weighted provider key, or the client's own where
the route allows it (``usable`` then keeps its providers only)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import cast

from fastgw.ai.adapter import Adapter, InvalidRequestError, Json, ProviderError, TokenCounter, Usage
from fastgw.ai.config import LlmConfig, Target
from fastgw.ai.formats.anthropic_request import parse_count_tokens_request
from fastgw.ai.formats.anthropic_response import error_body, render_count_tokens
from fastgw.ai.provider_calls import ERROR_BODY_MAX, read_reply, send_request
from fastgw.ai.record import LlmRecord
from fastgw.exchange import Exchange
from fastgw.handler_api import Upstreams


async def count_tokens(
    llm: LlmConfig,
    adapters: Mapping[str, Adapter],
    allowed: Callable[[str], bool],
    ex: Exchange,
    body: bytes,
    upstreams: Upstreams,
    credential: Callable[[Target, LlmRecord], tuple[tuple[bytes, bytes], ...] | None] | None = None,
    usable: Callable[[Target], bool] | None = None,
    guard: Callable[[Json, LlmRecord], None] | None = None,
) -> tuple[int, bytes]:
    """The status and body to answer (Anthropic's shapes); the caller writes them."""
    started = time.monotonic()
    try:
        pivot = parse_count_tokens_request(body)
    except InvalidRequestError as exc:
        return 400, error_body(400, exc.message)
    name = str(pivot.get("model", ""))
    record = ex.llm = LlmRecord(model=name, endpoint="count_tokens")
    model = llm.models.get(name)
    if model is None or not allowed(name):
        return 404, error_body(404, f"model: {name}")
    if guard is not None:
        try:
            guard(pivot, record)  # masks in place, or refuses
        except InvalidRequestError as exc:
            return 400, error_body(400, exc.message)
    try:
        for target in model.targets:
            adapter = adapters[target.provider.kind]
            if not adapter.capabilities.count_tokens or (usable is not None and not usable(target)):
                continue
            counter = cast(TokenCounter, adapter)
            record.attempts += 1
            record.provider, record.provider_model = target.provider.name, target.target.model
            try:
                request = counter.count_tokens_request(pivot, target.target)
                headers = None if credential is None else credential(target, record)
                reply = await send_request(upstreams, target, request, headers)
                data = await read_reply(reply, ERROR_BODY_MAX)
                if reply.status >= 400:
                    raise adapter.error(reply.status, {}, data)
                tokens = counter.count_tokens_response(data)
            except InvalidRequestError as exc:
                return 400, error_body(400, exc.message)
            except ProviderError as exc:
                record.error = exc.kind
                return exc.status, error_body(exc.status, exc.message)
            record.usage = Usage(prompt_tokens=tokens, reported=True)
            return 200, render_count_tokens(tokens)
        return 400, error_body(400, f"count_tokens: no provider of model '{name}' can count tokens")
    finally:
        record.duration_ms = (time.monotonic() - started) * 1000.0
