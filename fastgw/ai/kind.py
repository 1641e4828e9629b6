"""``kind = "llm"``: the handler kind of the AI gateway and its ``[llm]`` section (one registry line in
fastgw/handlers/registry.py).

``[llm]`` (providers and models) is compiled once per config (``config.py``); each llm route gets an
``LlmHandler`` sharing it, with the route's own list of the models it serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from fastgw.ai.budget_config import BudgetRouteSpec, BudgetSpec, compile_route_budgets
from fastgw.ai.cache import CacheSpec, cache_of
from fastgw.ai.config import LlmConfig, LlmSpec, ModelSpec, ProviderSpec, TargetSpec, compile_llm
from fastgw.ai.guardrails.spec import GuardrailsSpec
from fastgw.ai.price_config import PriceSpec
from fastgw.ai.resilience import ProviderKeySpec
from fastgw.config.fields import Section, doc
from fastgw.handlers.kind import CompileContext, CompileError, HandlerKind

if TYPE_CHECKING:
    from fastgw.ai.handler import LlmHandler


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmRouteSpec(BudgetRouteSpec):
    models: tuple[str, ...] = doc(
        "the public model names this route serves (glob patterns, e.g. ['gpt-4o*']);"
        " empty: every [[llm.models]]",
        (),
    )
    byok_providers: tuple[str, ...] = doc(
        "bring-your-own-key: the [[llm.providers]] names for which a client may send its own provider key"
        " in x-fastgw-provider-key (used instead of the gateway's; the client's fastgw credential stays in"
        " Authorization). Requests that send one go only to targets of these providers. Empty: the header"
        " is refused with a 400 and never forwarded",
        (),
    )
    cache: CacheSpec | None = doc(
        "the response cache (opt-in): deterministic chat answers served again without a provider call"
        " (docs/llm-cache.md)",
        None,
    )
    guardrails: GuardrailsSpec | None = doc(
        "detectors of personal data, secrets and prompt injection with their actions, token ceilings and"
        " prompt logging (docs/llm-guardrails.md)",
        None,
    )


def _compile_section(spec: LlmSpec | None, ctx: CompileContext) -> LlmConfig | None:
    return None if spec is None else compile_llm(spec, ctx)


def compile_route(spec: LlmRouteSpec, ctx: CompileContext) -> LlmHandler:
    # Imported here, not at the top: a worker whose config has no llm route never loads the handler,
    # the client formats and the provider adapters (~0.6 MiB of idle RSS).
    from fastgw.ai.formats.registry import FORMATS
    from fastgw.ai.handler import LlmHandler
    from fastgw.ai.providers.registry import ADAPTERS

    llm: Any = ctx.sections.get("llm")
    if llm is None:
        raise CompileError("models", "an llm route needs an [llm] section with providers and models")
    for name in spec.byok_providers:
        if name not in llm.providers:
            raise CompileError("byok_providers", f"no [[llm.providers]] named {name!r}")
    handler = LlmHandler(llm, ADAPTERS, FORMATS, spec.models, frozenset(spec.byok_providers))
    handler.cache = cache_of(spec.cache, ctx)
    handler.budgets = compile_route_budgets(spec, ctx, llm.prices)
    if spec.guardrails is not None:
        from fastgw.ai.guardrails.config import GuardrailsError, compile_guardrails
        from fastgw.ai.guardrails.guard import Guardrails

        try:
            handler.guardrails = Guardrails(compile_guardrails(spec.guardrails))
        except GuardrailsError as exc:
            raise CompileError(f"guardrails.{exc.field}", exc.reason) from None
    return handler


_JSON: Final = b"application/json"


def error_body(ex: Any, status: int, problem: str, detail: str) -> tuple[bytes, bytes]:
    """The gateway's own refusals on an llm route (a policy's 401 or 429, a body over the route's
    bound) in the error shape of the client's SDK: Anthropic's for the Messages endpoints and for
    clients that send ``anthropic-version``, OpenAI's otherwise (``problem`` is the code)."""
    from fastgw.ai.formats.anthropic_response import error_body as anthropic_error_body
    from fastgw.ai.formats.openai import error_body as openai_error_body

    path = bytes(ex.path)
    if b"/messages" in path or ex.header(b"anthropic-version") is not None:
        return _JSON, anthropic_error_body(status, detail)
    return _JSON, openai_error_body(status, detail, None, problem)


SECTION: Final = Section(
    LlmSpec,
    "[llm] the AI gateway's providers and models (routes with kind = 'llm')",
    "optional",
    (
        ("[llm]", LlmSpec, "The AI gateway: fallback, retries, cool-downs and default deadlines."),
        ("[[llm.providers]]", ProviderSpec, "An LLM provider account, reached through an [upstreams.NAME]."),
        ("[[llm.providers]].api_keys", ProviderKeySpec, "One of several keys of a provider."),
        ("[[llm.models]]", ModelSpec, "A public model name and where its requests go."),
        ("[[llm.models]].targets", TargetSpec, "One target of a model."),
        ('routes.handler.cache (kind = "llm")', CacheSpec, "An llm route's response cache."),
        ("[[routes.handler.budgets]]", BudgetSpec, "A token limit or spend budget of a route."),
        ("[[llm.prices]]", PriceSpec, "A price of a provider model, over the shipped table."),
    ),
)

KIND: Final = HandlerKind(
    "The AI gateway: OpenAI- and Anthropic-compatible APIs over every [[llm.providers]].",
    LlmRouteSpec,
    compile_route,
    "llm",
    SECTION,
    _compile_section,
    error_body,
)
