"""``kind = "prompt_api"`` and its ``[[prompt_api]]`` section (one registry line in
fastgw/handlers/registry.py).

The section (prompt_config.py) is compiled once per config, after ``[llm]`` (the registry's order), so
each API's model is known with its context window. A route of this kind publishes the APIs whose paths
lie under its own path (or the ones its ``apis`` names): its policies (auth, which every route must
state, rate limits, quotas) run before the handler as on any route, so a prompt API is exactly as closed
as the route that carries it; its budgets (the llm route's keys, ai/budget_config.py) count each API call
as an llm route counts a chat request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from fastgw.ai.budget_config import BudgetRouteSpec, compile_route_budgets
from fastgw.ai.prompt_config import PromptApi, PromptApiSpec, compile_prompt_apis
from fastgw.config.fields import Section, doc
from fastgw.handlers.kind import CompileContext, CompileError, HandlerKind

if TYPE_CHECKING:
    from fastgw.ai.prompt_handler import PromptApiHandler


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptRouteSpec(BudgetRouteSpec):
    apis: tuple[str, ...] = doc(
        "the [[prompt_api]] names this route publishes (each path must lie under the route's path);"
        " empty: every [[prompt_api]] whose path lies under it",
        (),
    )


def under(path: str, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it, segment-wise (the router's prefix rule)."""
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/")


def _compile_section(specs: tuple[PromptApiSpec, ...], ctx: CompileContext) -> dict[str, PromptApi]:
    return compile_prompt_apis(specs, ctx)


def compile_route(spec: PromptRouteSpec, ctx: CompileContext) -> PromptApiHandler:
    # Imported here: a config without prompt APIs never loads the adapters (see ai/kind.py).
    from fastgw.ai.prompt_handler import PromptApiHandler
    from fastgw.ai.providers.registry import ADAPTERS

    apis: dict[str, PromptApi] = ctx.sections.get("prompt_api") or {}
    if spec.apis:
        chosen = []
        for name in spec.apis:
            api = apis.get(name)
            if api is None:
                raise CompileError("apis", f"no [[prompt_api]] named {name!r}")
            if not under(api.path, ctx.route_path):
                raise CompileError(
                    "apis", f"{name!r} answers {api.path}, outside this route's {ctx.route_path}"
                )
            chosen.append(api)
    else:
        chosen = [api for api in apis.values() if under(api.path, ctx.route_path)]
    if not chosen:
        raise CompileError("apis", f"no [[prompt_api]] path lies under this route's path {ctx.route_path}")
    llm: Any = ctx.sections["llm"]  # present: every [[prompt_api]] names one of its models
    handler = PromptApiHandler(llm, ADAPTERS, tuple(chosen), ctx.route_name, ctx.route_schemes)
    handler.budgets = compile_route_budgets(spec, ctx, llm.prices)
    return handler


SECTION: Final = Section(
    PromptApiSpec,
    "[[prompt_api]] prompt templates published as JSON APIs (routes with kind = 'prompt_api')",
    "array",
    (("[[prompt_api]]", PromptApiSpec, "A prompt template published as a JSON API on a prompt_api route."),),
)

KIND: Final = HandlerKind(
    "Prompt templates as JSON APIs: a validated body fills a template sent to a model ([[prompt_api]]).",
    PromptRouteSpec,
    compile_route,
    "prompt_api",
    SECTION,
    _compile_section,
)
