"""The [api_key] section and its compile: the control-plane half of api_key.py (a compiled hot module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastgw.config.context import TOKEN, CompileContext
from fastgw.config.fields import Section, doc
from fastgw.policy.api_key import ApiKeyAuth
from fastgw.policy.identity import IDENTITIES


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKeySpec:
    headers: tuple[str, ...] = doc(
        "headers that may carry the key; Authorization takes 'Bearer KEY'", ("authorization", "x-api-key")
    )
    mode: Literal["enforce", "shadow"] = doc(
        "shadow: a failed check is logged and counted, the request goes on as anonymous", "enforce"
    )


def compile(spec: ApiKeySpec, ctx: CompileContext) -> None:
    """[api_key]: offered to routes as auth = "api_key" when a [keys] table gives the peppers."""
    keys = ctx.keys
    if keys is None:
        return
    for i, name in enumerate(spec.headers):
        if not TOKEN.fullmatch(name):
            raise ctx.error(f"api_key.headers[{i}]", f"{name!r} is not a header name")
    if not spec.headers:
        raise ctx.error("api_key.headers", "needs at least one header name")
    current = keys.peppers[keys.pepper_id]
    others = tuple(p for pid, p in keys.peppers.items() if pid != keys.pepper_id)
    policy = ApiKeyAuth(
        "api_key",
        frozenset(h.lower().encode() for h in spec.headers),
        (current, *others),
        IDENTITIES if ctx.identities is None else ctx.identities,
        spec.mode == "shadow",
        ctx.throttle,
        ctx.clock,
    )
    ctx.auth["api_key"] = policy
    ctx.credential_headers["api_key"] = policy.headers  # the credential never reaches the upstream


# [api_key] in the schema and the reference (policy/registry.py declares it).
SECTION = Section(
    ApiKeySpec,
    "[api_key] the API key policy of routes with auth = 'api_key'",
    "always",
    (("[api_key]", ApiKeySpec, "The API key policy (routes with auth = 'api_key')."),),
)
