"""``kind = "llm"``: the handler that serves the OpenAI and Anthropic APIs over every configured provider.

One Task per request (DESIGN.md: handler kinds). The endpoint comes from the path under the route
(``/chat/completions``, ``/embeddings``, ``/models``: OpenAI's format; ``/messages``,
``/messages/count_tokens``: Anthropic's), the client's body becomes a pivot request (``adapter.py``),
the model's targets are tried in order (``attempts.py``, ``routing.py``) through the gateway's own
upstream pools, and the answer goes back in the client's format (``relay.py``): whole, or streamed event
by event with no buffering of the answer. A target is retried or abandoned for the next one only before
the first byte reached the client: after that, a failure ends the stream with an error event. Which
target answered and how many calls were made go to the ``x-fastgw-llm-target`` header and the access log
(``Exchange.llm``). Errors are in the
client's SDK shape, the gateway's own refusals before the handler (a policy's 401 or 429, a body over the
route's ``max_body_bytes``) included: the connection renders them with the route's ``error_body``
(``kind.py``). A route that allows bring-your-own-key (``byok_providers``) takes the client's own
provider key from ``x-fastgw-provider-key`` for those providers only; elsewhere that header is refused.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Final

import orjson

from fastgw.ai.adapter import Adapter, InvalidRequestError, Json, ProviderRequest
from fastgw.ai.attempts import Build, OwnKey, Relay, TargetLoop
from fastgw.ai.budgets import Budgets, Hold
from fastgw.ai.cache import ResponseCache
from fastgw.ai.client_format import ClientFormat
from fastgw.ai.config import LlmConfig, Model, Target
from fastgw.ai.count_tokens import count_tokens
from fastgw.ai.guardrails.guard import OUTPUT_KEYS, Guardrails
from fastgw.ai.guardrails.report import GuardrailsReport
from fastgw.ai.prices import record_cost
from fastgw.ai.record import LlmRecord
from fastgw.ai.relay import (
    JSON,
    cancel_kind,
    provider_may_bill,
    relay_chat,
    relay_embeddings,
    relay_stream,
    status_kind,
    target_field,
)
from fastgw.exchange import Exchange
from fastgw.handler_api import ResponseWriter, UpstreamReply, Upstreams
from fastgw.policy.model_grants import matches, may_use

# The header a client sends its own provider key in, on routes that allow it (``byok_providers``):
# never Authorization, which carries the client's fastgw credential.
OWN_KEY_HEADER: Final = b"x-fastgw-provider-key"
# Provider keys are under 200 characters (OpenAI's project keys are the longest); 1 KiB bounds a value
# that is no key.
OWN_KEY_MAX: Final = 1024


class LlmHandler:
    """One per llm route; state shared by its requests is the per-worker target and key health."""

    __slots__ = ("adapters", "allowed", "budgets", "byok", "cache", "formats", "guardrails", "llm", "loop")

    def __init__(
        self,
        llm: LlmConfig,
        adapters: Mapping[str, Adapter],
        formats: Mapping[str, ClientFormat],
        allowed: tuple[str, ...],
        byok: frozenset[str] = frozenset(),
    ) -> None:
        self.llm = llm
        self.adapters = adapters
        self.formats = formats
        self.allowed = allowed  # glob patterns of the public model names this route serves
        self.byok = byok  # providers the client's own key may be used with (empty: none)
        self.loop = TargetLoop(llm, adapters, random.Random())
        self.cache: ResponseCache | None = None  # the route's response cache, if it has one (cache.py)
        self.budgets: Budgets | None = None  # token limits and spend budgets (ai/budgets.py)
        self.guardrails: Guardrails | None = None  # the route's guardrails table (ai/guardrails/)

    def model_allowed(self, name: str, ex: Exchange | None = None) -> bool:
        """The route serves ``name`` and the caller may use it: its API key's consumer, its JWT's models
        claim or its certificate's mapping may list models (policy/model_grants.py)."""
        if self.allowed and not matches(name, self.allowed):
            return False
        return ex is None or may_use(ex.consumer, name)

    async def handle(self, ex: Exchange, body: bytes, out: ResponseWriter, upstreams: Upstreams) -> None:
        path = ex.path.decode("latin-1").rstrip("/")
        fmt = self.formats[
            "anthropic" if "/messages" in path or ex.header(b"anthropic-version") else "openai"
        ]
        own_key = ex.header(OWN_KEY_HEADER)
        if own_key is not None:
            problem = self._own_key_problem(own_key)
            if problem:
                await self._fail(out, fmt, 400, problem, None, "provider_key_not_accepted")
                return
        if path.endswith("/chat/completions"):
            await self._chat(ex, body, out, upstreams, self.formats["openai"], "chat")
        elif path.endswith("/messages/count_tokens"):
            await self._count_tokens(ex, body, out, upstreams)
        elif path.endswith("/messages"):
            await self._chat(ex, body, out, upstreams, self.formats["anthropic"], "messages")
        elif path.endswith("/embeddings"):
            await self._embeddings(ex, body, out, upstreams)
        elif path.endswith("/models"):
            await self._models(ex, out)
        else:
            await self._fail(out, fmt, 404, f"no such endpoint: {path}", None)

    async def _count_tokens(
        self, ex: Exchange, body: bytes, out: ResponseWriter, upstreams: Upstreams
    ) -> None:
        own = self._own_key(ex)

        def credential(target: Target, record: LlmRecord) -> tuple[tuple[bytes, bytes], ...] | None:
            return self.loop.credential(target, own, record)[1]

        def usable(target: Target) -> bool:
            return own is None or target.provider.name in own.providers

        guard = None
        guardrails = self.guardrails
        if guardrails is not None:
            fmt = self.formats["anthropic"]

            def guard(pivot: Json, record: LlmRecord) -> None:
                record.guardrails = GuardrailsReport()
                guardrails.check(pivot, fmt, record.guardrails)  # raises the 400 of a blocked prompt

        allowed = functools.partial(self.model_allowed, ex=ex)
        status, answer = await count_tokens(
            self.llm, self.adapters, allowed, ex, body, upstreams, credential, usable, guard
        )
        await _send(out, status, answer)

    def _own_key_problem(self, value: bytes) -> str:
        """Why the client's own provider key cannot be used ("" when it can)."""
        if not self.byok:
            return f"this route does not accept a provider key ({OWN_KEY_HEADER.decode()})"
        if not value or len(value) > OWN_KEY_MAX or not all(33 <= c < 127 for c in value):
            return f"{OWN_KEY_HEADER.decode()} is not a provider key"
        return ""

    def _own_key(self, ex: Exchange) -> OwnKey | None:
        value = ex.header(OWN_KEY_HEADER)
        return None if value is None else OwnKey(value.decode("ascii"), self.byok)

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
        """``POST /v1/embeddings``: the same target loop as chat, without streaming."""
        fmt = self.formats["openai"]
        pivot = _parsed(fmt.parse_embeddings, body)
        if isinstance(pivot, InvalidRequestError):
            await self._fail(out, fmt, 400, pivot.message, pivot.param, pivot.code)
            return
        record = ex.llm = LlmRecord(model=str(pivot.get("model", "")), endpoint="embeddings")
        if self.guardrails is not None and not await self._guard(out, fmt, pivot, record, self.guardrails):
            return

        async def relay(reply: UpstreamReply, adapter: Adapter, target: Target, began: float) -> None:
            await relay_embeddings(reply, adapter, out, fmt, record, pivot)

        await self._run(
            ex,
            out,
            upstreams,
            fmt,
            record,
            lambda a, t: a.embeddings_request(pivot, t.target),
            relay,
            need=(len(body), None),
        )

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
        pivot = _parsed(fmt.parse_chat, body)
        if isinstance(pivot, InvalidRequestError):
            await self._fail(out, fmt, 400, pivot.message, pivot.param, pivot.code)
            return
        stream = bool(pivot.get("stream"))
        record = ex.llm = LlmRecord(model=str(pivot.get("model", "")), endpoint=endpoint, stream=stream)
        cache_pivot = pivot
        if self.guardrails is not None:
            if self.cache is not None:
                # The cache is keyed by the client's own request: masking makes different prompts alike
                # (two emails, one placeholder), and a hit would replay another client's restored value.
                cache_pivot = orjson.loads(orjson.dumps(pivot))
            guarded = await self._guard(out, fmt, pivot, record, self.guardrails)
            if guarded is None:
                return
            fmt = guarded
            if cache_pivot is not pivot:  # a cap max_output_tokens lowered changes the answer: keyed
                for key in OUTPUT_KEYS:
                    if key in pivot:
                        cache_pivot[key] = pivot[key]
        ticket = None
        admitted = None
        if self.cache is not None:
            # Before the lookup: a hit is answered only for a model the config still has, to a caller
            # its budgets admit (a limit of 0 switches a key off, a hit included; a hit counts as a
            # request and gives its token and spend estimates back).
            admitted = await self._admit(ex, out, fmt, record, (len(body), pivot))
            if admitted is None:
                return
            hold = admitted[1]
            try:
                ticket = await self.cache.lookup(ex, cache_pivot, fmt.name, record, out)
            except BaseException:  # cut while looking up or replaying: the estimates go back
                if hold is not None:
                    hold.settle(record, False)
                raise
            if ticket.served:
                record.duration_ms = (time.monotonic() - started) * 1000.0
                if hold is not None:
                    hold.settle(record, False)
                return
            out = ticket.writer

        async def relay(reply: UpstreamReply, adapter: Adapter, target: Target, began: float) -> None:
            if stream:
                await relay_stream(reply, adapter, target, out, fmt, record, pivot, started, began)
            else:
                await relay_chat(reply, adapter, out, fmt, record)

        def build(adapter: Adapter, target: Target) -> ProviderRequest:
            return adapter.chat_request(pivot, target.target, stream)

        await self._run(ex, out, upstreams, fmt, record, build, relay, started, (len(body), pivot), admitted)
        if ticket is not None:
            await ticket.keep(record)

    async def _guard(
        self, out: ResponseWriter, fmt: ClientFormat, pivot: Json, record: LlmRecord, guardrails: Guardrails
    ) -> ClientFormat | None:
        """The route's guardrails on the request (ai/guardrails/): the format to answer with (it restores
        masked values), or None when refused (the 400 is sent)."""
        record.guardrails = GuardrailsReport()
        try:
            return guardrails.check(pivot, fmt, record.guardrails)
        except InvalidRequestError as exc:  # answered after: no await in an except block (ai/attempts.py)
            invalid = exc
        await self._fail(out, fmt, 400, invalid.message, invalid.param, invalid.code)
        return None

    async def _run(
        self,
        ex: Exchange,
        out: ResponseWriter,
        upstreams: Upstreams,
        fmt: ClientFormat,
        record: LlmRecord,
        build: Build,
        relay: Relay,
        started: float | None = None,
        need: tuple[int, Json | None] = (0, None),
        admitted: tuple[Model, Hold | None] | None = None,
    ) -> None:
        """The model's targets tried for one request (``attempts.py``), the record's duration kept;
        ``need`` (body bytes, pivot) is what the route's budgets estimate the request from, unless
        ``admitted`` already (``_admit``)."""
        started = time.monotonic() if started is None else started
        if admitted is None:
            admitted = await self._admit(ex, out, fmt, record, need)
            if admitted is None:
                return
        model, hold = admitted

        async def fail(
            status: int, message: str, param: str | None, code: str | None, retry_after: float | None
        ) -> None:
            await self._fail(out, fmt, status, message, param, code, retry_after, record)

        try:
            await self.loop.run(
                model,
                upstreams,
                out,
                record,
                build,
                relay,
                fail,
                stream=record.stream,
                own_key=self._own_key(ex),
            )
        except asyncio.CancelledError as cancelled:
            # Cut before the answer began too (the client left, or the stopping worker answered 503):
            # said in the record, or the access log and metrics count a 499 as a refused request. (A
            # stream cut mid-answer is named in relay_stream already; nothing awaited here.)
            if not record.error:
                record.error = cancel_kind(cancelled)
            raise
        finally:
            record.duration_ms = (time.monotonic() - started) * 1000.0
            record.cost_usd = record_cost(self.llm.prices, record)
            if hold is not None:
                hold.settle(record, provider_may_bill(record, out.started, ex.status))

    async def _admit(
        self,
        ex: Exchange,
        out: ResponseWriter,
        fmt: ClientFormat,
        record: LlmRecord,
        need: tuple[int, Json | None],
    ) -> tuple[Model, Hold | None] | None:
        """The requested model and the route's budget reservation for it (None: no budgets), or None
        once the client was answered: a 404 for a model it may not use, or the budgets' 429."""
        name = record.model
        model = self.llm.models.get(name)
        if model is None or not self.model_allowed(name, ex):
            message = f"The model '{name}' does not exist or you do not have access to it."
            await self._fail(out, fmt, 404, message, "model", "model_not_found")
            return None
        hold = None if self.budgets is None else self.budgets.reserve(ex, model, need[0], need[1])
        if hold is not None:
            if hold.refusal is not None:
                await hold.refuse(out, fmt)
                return None
            hold.show(ex)
        return model, hold

    async def _fail(
        self,
        out: ResponseWriter,
        fmt: ClientFormat,
        status: int,
        message: str,
        param: str | None,
        code: str | None = None,
        retry_after: float | None = None,
        record: LlmRecord | None = None,
    ) -> None:
        if out.started:
            return
        body = fmt.render_error(status, message, status_kind(status), param, code)
        # A provider's reset hint goes on with its 429, so the client's SDK waits that long before its own
        # retry (both official SDKs read Retry-After) rather than retrying into the same refusal.
        fields: list[tuple[bytes, bytes]] = []
        if retry_after and status == 429:
            fields.append((b"retry-after", b"%d" % math.ceil(retry_after)))
        if record is not None and record.attempts:  # which target failed last, after how many calls
            fields.append(target_field(record))
        await _send(out, status, body, tuple(fields))


async def _send(
    out: ResponseWriter, status: int, body: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    out.start(status, (JSON, (b"content-length", b"%d" % len(body)), *extra))
    await out.write(body)
    await out.end()


def _parsed(parse: Callable[[bytes], Json], body: bytes) -> Json | InvalidRequestError:
    """``parse(body)``, or the client's error, answered by the caller after the try statement: compiled,
    a coroutine that awaits inside an except block leaks the exception (tests/test_native.py)."""
    try:
        return parse(body)
    except InvalidRequestError as exc:
        return exc
