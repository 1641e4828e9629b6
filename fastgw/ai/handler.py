"""``kind = "llm"``: the handler that serves the OpenAI and Anthropic APIs over every configured provider.

One Task per request (DESIGN.md: handler kinds). The endpoint comes from the path under the route
(``/chat/completions``, ``/embeddings``, ``/models``: OpenAI's format; ``/messages``,
``/messages/count_tokens``: Anthropic's), the client's body becomes a pivot request (``adapter.py``),
the model's targets are tried in order (``routing.py``) through the gateway's own upstream pools, and
the answer goes back in the client's format: whole, or streamed event by event with no buffering of
the answer. A target is abandoned for the next one only before the first byte reached the client:
after that, a failure ends the stream with an error event. Which target answered and how many were
tried go to the ``x-fastgw-llm-target`` header and the access log (``Exchange.llm``). Errors are in the
client's SDK shape, the gateway's own refusals before the handler (a policy's 401 or 429, a body over the
route's ``max_body_bytes``) included: the connection renders them with the route's ``error_body``
(``kind.py``).
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Mapping
from typing import Final

import orjson

from fastgw.ai.adapter import Adapter, InvalidRequestError, Json, ProviderError
from fastgw.ai.client_format import ClientFormat
from fastgw.ai.config import LlmConfig, Model, Target
from fastgw.ai.count_tokens import count_tokens
from fastgw.ai.provider_calls import (
    ERROR_BODY_MAX,
    RESPONSE_MAX,
    read_reply,
    reply_headers,
    send_request,
)
from fastgw.ai.record import LlmRecord
from fastgw.ai.routing import TargetHealth, plan
from fastgw.exchange import Exchange
from fastgw.handler_api import ResponseWriter, UpstreamReply, Upstreams
from fastgw.policy.model_grants import matches, may_use
from fastgw.proxy.client import UpstreamError

_SSE_HEAD: Final = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
)
_JSON: Final = (b"content-type", b"application/json")


def _status_kind(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")


class LlmHandler:
    """One per llm route; state shared by its requests is the per-worker target health."""

    __slots__ = ("adapters", "allowed", "formats", "health", "llm", "rng")

    def __init__(
        self,
        llm: LlmConfig,
        adapters: Mapping[str, Adapter],
        formats: Mapping[str, ClientFormat],
        allowed: tuple[str, ...],
    ) -> None:
        self.llm = llm
        self.adapters = adapters
        self.formats = formats
        self.allowed = allowed  # glob patterns of the public model names this route serves
        self.health = TargetHealth()
        self.rng = random.Random()

    def model_allowed(self, name: str, ex: Exchange | None = None) -> bool:
        """The route serves ``name`` and the caller may use it: its API key's consumer, its JWT's models
        claim or its certificate's mapping may list models (policy/model_grants.py)."""
        if self.allowed and not matches(name, self.allowed):
            return False
        return ex is None or may_use(ex.consumer, name)

    async def handle(self, ex: Exchange, body: bytes, out: ResponseWriter, upstreams: Upstreams) -> None:
        path = ex.path.decode("latin-1").rstrip("/")
        if path.endswith("/chat/completions"):
            await self._chat(ex, body, out, upstreams, self.formats["openai"], "chat")
        elif path.endswith("/messages/count_tokens"):
            allowed = functools.partial(self.model_allowed, ex=ex)
            status, answer = await count_tokens(self.llm, self.adapters, allowed, ex, body, upstreams)
            await _send(out, status, answer)
        elif path.endswith("/messages"):
            await self._chat(ex, body, out, upstreams, self.formats["anthropic"], "messages")
        elif path.endswith("/embeddings"):
            await self._embeddings(ex, body, out, upstreams)
        elif path.endswith("/models"):
            await self._models(ex, out)
        else:
            fmt = self.formats["anthropic" if ex.header(b"anthropic-version") else "openai"]
            await self._fail(out, fmt, 404, f"no such endpoint: {path}", None)

    # -- endpoints -------------------------------------------------------------------------------------
    async def _models(self, ex: Exchange, out: ResponseWriter) -> None:
        names = sorted(n for n in self.llm.models if self.model_allowed(n, ex))
        if ex.header(b"anthropic-version"):
            data: Json = {
                "data": [
                    {"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"}
                    for n in names
                ],
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        else:
            data = {
                "object": "list",
                "data": [{"id": n, "object": "model", "created": 0, "owned_by": "fastgw"} for n in names],
            }
        await _send(out, 200, orjson.dumps(data))

    async def _embeddings(self, ex: Exchange, body: bytes, out: ResponseWriter, upstreams: Upstreams) -> None:
        """``POST /v1/embeddings``: one target at a time, like chat, without streaming."""
        fmt = self.formats["openai"]
        started = time.monotonic()
        try:
            pivot = fmt.parse_embeddings(body)
        except InvalidRequestError as exc:
            await self._fail(out, fmt, 400, exc.message, exc.param, exc.code)
            return
        name = str(pivot.get("model", ""))
        record = ex.llm = LlmRecord(model=name, endpoint="embeddings")
        model = self.llm.models.get(name)
        if model is None or not self.model_allowed(name, ex):
            message = f"The model '{name}' does not exist or you do not have access to it."
            await self._fail(out, fmt, 404, message, "model", "model_not_found")
            return
        failure: ProviderError | None = None
        try:
            for target in plan(model, self.health, time.monotonic(), self.llm.max_attempts, self.rng):
                record.attempts += 1
                record.provider, record.provider_model = target.provider.name, target.target.model
                adapter = self.adapters[target.provider.kind]
                try:
                    request = adapter.embeddings_request(pivot, target.target)
                    reply = await send_request(upstreams, target, request)
                    if reply.status >= 400:
                        raise adapter.error(
                            reply.status, reply_headers(reply), await read_reply(reply, ERROR_BODY_MAX)
                        )
                    answer, usage = adapter.embeddings_response(
                        await read_reply(reply, RESPONSE_MAX, strict=True)
                    )
                except InvalidRequestError as exc:
                    await self._fail(out, fmt, 400, exc.message, exc.param, exc.code)
                    return
                except ProviderError as exc:
                    failure = exc
                    if exc.retryable and (
                        exc.provider_status in self.llm.fallback_on or exc.provider_status == 0
                    ):
                        self.health.set_aside(target, time.monotonic(), exc.retry_after)
                        continue
                    break
                answer["model"] = name
                record.usage = usage
                body_out = fmt.render_embeddings(answer, pivot)
                out.start(200, (_JSON, _target_field(record), (b"content-length", b"%d" % len(body_out))))
                await out.write(body_out)
                await out.end()
                return
            record.error = failure.kind if failure is not None else "no_target"
            if failure is None:
                await self._fail(out, fmt, 503, f"no provider is available for model '{name}'", None)
            else:
                await self._fail(out, fmt, failure.status, failure.message, None, None, failure.retry_after)
        finally:
            record.duration_ms = (time.monotonic() - started) * 1000.0

    async def _chat(
        self,
        ex: Exchange,
        body: bytes,
        out: ResponseWriter,
        upstreams: Upstreams,
        fmt: ClientFormat,
        endpoint: str,
    ) -> None:
        started = time.monotonic()
        try:
            pivot = fmt.parse_chat(body)
        except InvalidRequestError as exc:
            await self._fail(out, fmt, 400, exc.message, exc.param, exc.code)
            return
        name = str(pivot.get("model", ""))
        record = ex.llm = LlmRecord(model=name, endpoint=endpoint, stream=bool(pivot.get("stream")))
        model = self.llm.models.get(name)
        if model is None or not self.model_allowed(name, ex):
            await self._fail(
                out,
                fmt,
                404,
                f"The model '{name}' does not exist or you do not have access to it.",
                "model",
                "model_not_found",
            )
            return
        try:
            await self._try_targets(ex, pivot, model, out, upstreams, fmt, record, started)
        finally:
            record.duration_ms = (time.monotonic() - started) * 1000.0

    async def _try_targets(
        self,
        ex: Exchange,
        pivot: Json,
        model: Model,
        out: ResponseWriter,
        upstreams: Upstreams,
        fmt: ClientFormat,
        record: LlmRecord,
        started: float,
    ) -> None:
        stream = record.stream
        failure: ProviderError | None = None
        for target in plan(model, self.health, time.monotonic(), self.llm.max_attempts, self.rng):
            record.attempts += 1
            record.provider, record.provider_model = target.provider.name, target.target.model
            adapter = self.adapters[target.provider.kind]
            try:
                request = adapter.chat_request(pivot, target.target, stream)
            except InvalidRequestError as exc:
                await self._fail(out, fmt, 400, exc.message, exc.param, exc.code)
                return
            try:
                reply = await send_request(upstreams, target, request)
            except ProviderError as exc:
                failure = exc
                self.health.set_aside(target, time.monotonic(), None)
                continue
            if reply.status >= 400:
                error = adapter.error(
                    reply.status, reply_headers(reply), await read_reply(reply, ERROR_BODY_MAX)
                )
                if error.retryable and reply.status in self.llm.fallback_on:
                    self.health.set_aside(target, time.monotonic(), error.retry_after)
                    failure = error
                    continue
                record.error = error.kind
                await self._fail(out, fmt, error.status, error.message, None, None, error.retry_after)
                return
            try:
                if stream:
                    await self._relay_stream(pivot, reply, adapter, out, fmt, record, started)
                else:
                    await self._relay_whole(reply, adapter, target, model, out, fmt, record)
                return
            except ProviderError as exc:
                if out.started:  # the client has bytes: end the stream with an error event
                    record.error = exc.kind
                    return
                failure = exc
                if exc.retryable:
                    self.health.set_aside(target, time.monotonic(), exc.retry_after)
                    continue
                break
        record.error = failure.kind if failure is not None else "no_target"
        if failure is None:
            await self._fail(out, fmt, 503, f"no provider is available for model '{model.name}'", None)
        else:
            await self._fail(out, fmt, failure.status, failure.message, None, None, failure.retry_after)

    async def _relay_whole(
        self,
        reply: UpstreamReply,
        adapter: Adapter,
        target: Target,
        model: Model,
        out: ResponseWriter,
        fmt: ClientFormat,
        record: LlmRecord,
    ) -> None:
        data = await read_reply(reply, RESPONSE_MAX, strict=True)
        answer, usage = adapter.chat_response(data)
        answer["model"] = model.name
        record.usage = usage
        body = fmt.render_response(answer)
        out.start(200, (_JSON, _target_field(record), (b"content-length", b"%d" % len(body))))
        await out.write(body)
        await out.end()

    async def _relay_stream(
        self,
        pivot: Json,
        reply: UpstreamReply,
        adapter: Adapter,
        out: ResponseWriter,
        fmt: ClientFormat,
        record: LlmRecord,
        started: float,
    ) -> None:
        translator = adapter.chat_stream()
        encoder = fmt.stream_encoder(pivot)
        try:
            async for data in reply:
                chunks = translator.feed(data)
                if not chunks:
                    continue
                if not out.started:
                    out.start(200, (*_SSE_HEAD, _target_field(record)))
                    record.ttft_ms = (time.monotonic() - started) * 1000.0
                pieces = []
                for chunk in chunks:
                    chunk["model"] = record.model
                    pieces.append(encoder.encode(chunk))
                await out.write(b"".join(pieces))
            tail = translator.end()
        except (UpstreamError, ProviderError) as exc:
            # A provider that hangs up mid-stream is a failure like a malformed event: once the client
            # has bytes, it gets an error event (its SDK raises), never a stream cut short in silence.
            error = (
                exc
                if isinstance(exc, ProviderError)
                else ProviderError(
                    exc.status, "the provider stopped answering", retryable=True, kind=exc.problem
                )
            )
            record.usage = translator.usage
            if out.started:
                await out.write(encoder.error(error.status, error.message, _status_kind(error.status)))
                await out.end()
            raise error from None
        finally:
            await reply.close()
        if not out.started:
            out.start(200, (*_SSE_HEAD, _target_field(record)))
        pieces = []
        for chunk in tail:
            chunk["model"] = record.model
            pieces.append(encoder.encode(chunk))
        pieces.append(encoder.finish())
        record.usage = translator.usage
        await out.write(b"".join(pieces))
        await out.end()

    async def _fail(
        self,
        out: ResponseWriter,
        fmt: ClientFormat,
        status: int,
        message: str,
        param: str | None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        if out.started:
            return
        body = fmt.render_error(status, message, _status_kind(status), param, code)
        # A provider's reset hint goes on with its 429, so the client's SDK waits that long before its own
        # retry (both official SDKs read Retry-After) rather than retrying into the same refusal.
        hint = ((b"retry-after", b"%d" % math.ceil(retry_after)),) if retry_after and status == 429 else ()
        await _send(out, status, body, hint)


def _target_field(record: LlmRecord) -> tuple[bytes, bytes]:
    return (
        b"x-fastgw-llm-target",
        f"{record.provider}/{record.provider_model}; attempts={record.attempts}".encode(),
    )


async def _send(
    out: ResponseWriter, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    out.start(status, (_JSON, (b"content-length", b"%d" % len(body)), *extra))
    await out.write(body)
    await out.end()
