"""``kind = "prompt_api"``: the handler that answers the ``[[prompt_api]]`` paths under its route.

A request (after the route's policies: auth, limits) is one POST whose JSON body is validated against the
API's input schema (400 problem+json naming the failing JSON path), fills the system and user templates,
is checked against the model's context window (400 before any provider call), and is sent as a chat
request to the API's model alias through the same target loop as an llm route (``attempts.py``:
fallbacks, retries, provider keys). The answer is ``{"result": "<text>"}``, or with an output schema
``{"result": {...}}``: asked for in the provider's JSON-schema mode, parsed and validated; an answer that
is no JSON or does not match is asked for once more, then refused with a 502 naming the violation.
The exchange's ``LlmRecord`` (endpoint ``prompt_api``, both calls' usage summed) goes to the access log
and metrics as an llm route's does. The route's budgets (ai/budgets.py) reserve the filled prompt's
estimate before each call (a refusal is a 429 problem+json with the limit headers) and settle it at that
call's own usage.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson

from fastgw.ai import exact_json
from fastgw.ai.adapter import Adapter, Json, ProviderRequest, Usage
from fastgw.ai.attempts import TargetLoop
from fastgw.ai.budgets import Budgets, Hold
from fastgw.ai.config import LlmConfig, Target
from fastgw.ai.prices import record_cost
from fastgw.ai.prompt_config import PromptApi
from fastgw.ai.provider_calls import RESPONSE_MAX, read_reply
from fastgw.ai.record import LlmRecord
from fastgw.ai.relay import cancel_kind, provider_may_bill
from fastgw.codec.problem import PROBLEM_BASE
from fastgw.codec.serialize import REASONS
from fastgw.exchange import Exchange
from fastgw.handler_api import ResponseWriter, UpstreamReply, Upstreams
from fastgw.policy.model_grants import may_use

# The context-window estimate: UTF-8 bytes / 4, rounded up, plus the answer's max_tokens. English prose
# averages about 4 bytes per token in the BPE vocabularies of OpenAI, Anthropic and Gemini, so there the
# estimate is within about 25%; a byte-level BPE token covers at least one byte, so the true prompt count is
# at most 4x the estimate (text of short tokens: CJK, code, digits). The check refuses what cannot fit by
# the estimate; a prompt under it may still be refused by the provider (relayed as its 400).
BYTES_PER_TOKEN: Final = 4
# Chat formats add a few tokens per message (role markers): counted so a prompt at the edge is refused.
MESSAGE_OVERHEAD_TOKENS: Final = 4
# Calls for one request when the answer must match an output schema: the first and one retry.
SCHEMA_TRIES: Final = 2
# Objects and arrays nested in a request body, at most: a form's fields go a few levels deep; past this
# a value would fail to fill the template (orjson writes 254 levels at most) and only costs validation.
BODY_DEPTH_MAX: Final = 64
_PROBLEM: Final = b"application/problem+json"


def prompt_bytes(messages: list[Json]) -> int:
    """The filled prompt's size in UTF-8 bytes: what the context-window check and budgets estimate from."""
    return sum(len(str(m["content"]).encode()) for m in messages)


def estimate_tokens(messages: list[Json], max_tokens: int) -> int:
    """The prompt's estimated tokens (see BYTES_PER_TOKEN) plus what the answer may take."""
    size = prompt_bytes(messages)
    return math.ceil(size / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * len(messages) + max_tokens


class PromptApiHandler:
    """One per prompt_api route; the APIs it serves by exact path."""

    __slots__ = ("apis", "budgets", "by_path", "llm", "loop", "route_name", "schemes")

    def __init__(
        self,
        llm: LlmConfig,
        adapters: Mapping[str, Adapter],
        apis: tuple[PromptApi, ...],
        route_name: str = "",
        schemes: tuple[str, ...] = (),
    ) -> None:
        self.llm = llm
        self.apis = apis
        self.by_path = {api.path: api for api in apis}
        self.route_name = route_name  # for the admin listing and OpenAPI
        self.schemes = schemes  # the route's auth schemes, for OpenAPI's security
        self.loop = TargetLoop(llm, adapters, random.Random())
        self.budgets: Budgets | None = None  # the route's token limits and spend budgets (ai/budgets.py)

    async def handle(self, ex: Exchange, body: bytes, out: ResponseWriter, upstreams: Upstreams) -> None:
        path = bytes(ex.path).decode("latin-1").rstrip("/")
        api = self.by_path.get(path)
        if api is None:
            await _problem(out, ex, 404, "not-found", f"no prompt API at {path}")
            return
        if ex.method != b"POST":
            await _problem(
                out, ex, 405, "method-not-allowed", "a prompt API takes POST", (), ((b"allow", b"POST"),)
            )
            return
        if not may_use(ex.consumer, api.model):  # before the body: its schema is no business of theirs
            ex.error_detail = f"the credential may not use model {api.model!r}"  # the log's, not theirs
            await _problem(out, ex, 403, "model-not-allowed", "this credential may not use this API")
            return
        try:
            doc = exact_json.loads(body)  # a 25-digit number stays one (orjson alone: a float)
        except orjson.JSONDecodeError:
            await _problem(out, ex, 400, "invalid-body", "the body is not JSON")
            return
        if not isinstance(doc, dict):  # a schema's root $ref (drafts 4 to 7) hides its "type": object
            await _problem(out, ex, 400, "invalid-body", "the body must be a JSON object")
            return
        if _deeper_than(doc, BODY_DEPTH_MAX):
            detail = f"the body is nested deeper than {BODY_DEPTH_MAX} objects and arrays"
            await _problem(out, ex, 400, "invalid-body", detail)
            return
        error = api.input_schema.first_error(doc)
        if error is not None:
            where, message = error
            await _problem(out, ex, 400, "invalid-body", f"{where}: {message}", (("path", where),))
            return
        messages: list[Json] = []
        if api.system is not None:
            messages.append({"role": "system", "content": api.system.fill(doc)})
        messages.append({"role": "user", "content": api.template.fill(doc)})
        if api.context_window:
            estimate = estimate_tokens(messages, api.max_tokens)
            if estimate > api.context_window:
                # The numbers would tell the client the hidden prompt's length (to ~4 bytes, by bisecting
                # its input) and the model's window: in the log only.
                ex.error_detail = (
                    f"the filled prompt and its answer need about {estimate} tokens (estimated at"
                    f" {BYTES_PER_TOKEN} bytes per token, max_tokens {api.max_tokens} included): over"
                    f" {api.model!r}'s context window of {api.context_window}"
                )
                detail = "the input is too long for this API: the model could not take the prompt it fills"
                await _problem(out, ex, 400, "context-window-exceeded", detail)
                return
        await self._answer(ex, api, messages, out, upstreams)

    async def _answer(
        self, ex: Exchange, api: PromptApi, messages: list[Json], out: ResponseWriter, upstreams: Upstreams
    ) -> None:
        record = ex.llm = LlmRecord(model=api.model, endpoint="prompt_api")
        started = time.monotonic()
        pivot: Json = {"model": api.model, "messages": messages, **api.parameters}
        try:
            await self._tries(ex, api, pivot, prompt_bytes(messages), record, out, upstreams)
        finally:
            record.duration_ms = (time.monotonic() - started) * 1000.0

    def _call(self, record: LlmRecord, usage: Usage) -> LlmRecord:
        """One provider call's own record: its usage, priced at the target that answered it (the
        request's record sums both calls')."""
        call = LlmRecord(record.model, record.endpoint, False, record.provider, record.provider_model)
        call.usage = usage
        call.unanswered = record.unanswered
        call.cost_usd = record_cost(self.llm.prices, call) if usage.reported else None
        return call

    async def _tries(
        self,
        ex: Exchange,
        api: PromptApi,
        pivot: Json,
        size: int,
        record: LlmRecord,
        out: ResponseWriter,
        upstreams: Upstreams,
    ) -> None:
        """The provider calls of one prompt API request: a second when the first broke the output
        schema. Each call is priced at the target that answered it (the two may differ); the record's
        cost is their sum, unknown if either's is. With budgets each call reserves the filled prompt's
        estimate (``size`` bytes) before it is made and settles at its own usage: a retry the budget has
        no room for is refused (429) rather than made unaccounted."""
        if api.output_schema is not None:
            pivot["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(api.name), "schema": api.output_schema.document},
            }
        model = self.llm.models[api.model]
        answers: list[tuple[Json, Usage]] = []

        async def relay(reply: UpstreamReply, adapter: Adapter, target: Target, began: float) -> None:
            answers.append(adapter.chat_response(await read_reply(reply, RESPONSE_MAX, strict=True)))

        def build(adapter: Adapter, target: Target) -> ProviderRequest:
            return adapter.chat_request(pivot, target.target, False)

        async def fail(
            status: int, message: str, param: str | None, code: str | None, retry_after: float | None
        ) -> None:
            # What the provider or the target loop said names what the API hides (the provider, its
            # model, an account, the alias): in the log only; the client learns what kind of failure.
            hint = ((b"retry-after", b"%d" % math.ceil(retry_after)),) if retry_after else ()
            ex.error_detail = message[:300]
            status, message = public_failure(status)
            await _problem(out, ex, status, "provider-error", message, (), hint)

        violation = ""
        cost: float | None = 0.0
        so_far: Usage | None = None
        # One request_timeout for the request, the output schema's retry included (each run had its own:
        # a client could wait twice as long as the setting says).
        deadline = time.monotonic() + self.loop.llm.resilience.request_timeout
        for _ in range(SCHEMA_TRIES):
            answers.clear()
            hold = None
            if self.budgets is not None:
                hold = self.budgets.reserve(ex, model, size, pivot)
                if hold.refusal is not None:
                    await _refuse(out, ex, hold)  # a retry refused: the first call stays counted
                    return
                hold.show(ex)
            call: LlmRecord | None = None  # this call's own usage and cost, once it answered
            record.unanswered = 0  # the calls of this run only: the run before settled its own
            try:
                await self.loop.run(model, upstreams, out, record, build, relay, fail, deadline=deadline)
                if answers:
                    call = self._call(record, answers[0][1])
            except asyncio.CancelledError as cancelled:
                if not record.error:  # the client left, or the stopping worker (as on llm routes)
                    record.error = cancel_kind(cancelled)
                raise
            finally:
                if hold is not None:
                    # Answered, or cut while the request was out: the provider may bill for it.
                    billed = call is not None or provider_may_bill(record, out.started, ex.status)
                    hold.settle(call or self._call(record, Usage()), billed)
            if call is None:  # the loop answered the error
                return
            answer, usage = answers[0]
            this = call.cost_usd
            cost = None if this is None or cost is None else cost + this
            record.cost_usd = cost
            so_far = usage if so_far is None else _sum(so_far, usage)
            record.usage = so_far
            text = _content(answer)
            if text is None:
                record.error = "no_text"
                await _problem(out, ex, 502, "no-answer", "the model gave no text answer")
                return
            cut = _finish_reason(answer) == "length"
            if api.output_schema is None:
                # An answer cut at max_tokens says so: a 200 alone would pass it off as whole.
                await _send_result(
                    out, orjson.dumps({"result": text, "truncated": True} if cut else {"result": text})
                )
                return
            try:
                result = exact_json.loads(text.encode())
            except orjson.JSONDecodeError:
                if cut:  # asked again, the same prompt would be cut again (and billed twice)
                    record.error = "truncated"
                    detail = f"the model's answer was cut at the API's max_tokens ({api.max_tokens})"
                    await _problem(out, ex, 502, "answer-truncated", detail)
                    return
                violation = "the answer is not JSON"
                continue
            error = api.output_schema.first_error(result)
            if error is None:
                try:
                    whole = exact_json.dumps({"result": result})
                except orjson.JSONEncodeError:  # nested past what either JSON library writes (~990 levels)
                    violation = "the answer is nested too deeply"
                    continue
                await _send_result(out, whole)
                return
            violation = f"{error[0]}: {error[1]}"
        record.error = "output_schema"
        detail = f"the model's answer did not match the output schema in {SCHEMA_TRIES} tries: {violation}"
        await _problem(out, ex, 502, "output-schema-violation", detail)


async def _refuse(out: ResponseWriter, ex: Exchange, hold: Hold) -> None:
    """A budget's refusal (hold.refusal): 429 (503 with the shared store down) with Retry-After and the
    limit headers, as problem+json; ``code`` is the OpenAI-style code an llm route would give."""
    assert hold.refusal is not None
    message, code = hold.refusal
    problem = "budget-unavailable" if hold.status == 503 else "budget-exceeded"
    retry = ((b"retry-after", b"%d" % max(1, math.ceil(hold.retry))),)
    hold.show(ex)  # its limit headers replace an earlier call's (an output schema's retry refused)
    await _problem(out, ex, hold.status, problem, message, (("code", code),), retry)


def public_failure(status: int) -> tuple[int, str]:
    """The status and message a prompt API's client gets for a failed provider call (what was said is in
    the access log's ``error``): a provider's refusal of the gateway's own request or credentials (401,
    403, 404, 422) is a 502, as every server-side failure is."""
    if status in (400, 413):
        return (
            status,
            "the model's provider refused the request made from this input (too long, or not accepted)",
        )
    if status == 429:
        return 429, "the model's provider is limiting requests: try again later"
    if status == 503:
        return 503, "no provider is available for this API now"
    if status == 504:
        return 504, "the model's provider did not answer in time"
    return 502, "the model's provider failed to answer"


def _deeper_than(value: Any, most: int) -> bool:
    """Whether ``value`` nests objects and arrays more than ``most`` deep (without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= most:
                    return True
                stack.append((child, depth + 1))
    return False


async def _send_result(out: ResponseWriter, body: bytes) -> None:
    """The 200: no ``x-fastgw-llm-target`` as llm routes send (it names the provider and its model)."""
    out.start(200, ((b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))))
    await out.write(body)
    await out.end()


def _finish_reason(answer: Json) -> str | None:
    try:
        reason = answer["choices"][0]["finish_reason"]
    except (KeyError, IndexError, TypeError):
        return None
    return reason if isinstance(reason, str) else None


def _content(answer: Json) -> str | None:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _sum(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
        a.cached_tokens + b.cached_tokens,
        a.reasoning_tokens + b.reasoning_tokens,
        a.reported or b.reported,  # one call's count kept when the other's is missing (its cost: unknown)
        a.cache_creation_tokens + b.cache_creation_tokens,
    )


def _schema_name(name: str) -> str:
    """OpenAI's json_schema.name: letters, digits, _ and -, at most 64."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]


async def _problem(
    out: ResponseWriter,
    ex: Exchange,
    status: int,
    problem: str,
    detail: str,
    extra: tuple[tuple[str, Any], ...] = (),
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """An RFC 9457 problem document (with extension members such as the failing ``path``)."""
    if out.started:
        return
    doc: dict[str, Any] = {
        "type": PROBLEM_BASE + problem,
        "title": REASONS.get(status, "Error"),
        "status": status,
        "detail": detail,
        **dict(extra),
    }
    if ex.request_id:
        doc["request_id"] = ex.request_id.decode("latin-1")
    body = orjson.dumps(doc)
    out.start(status, ((b"content-type", _PROBLEM), (b"content-length", b"%d" % len(body)), *headers))
    await out.write(body)
    await out.end()
