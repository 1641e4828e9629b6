"""``[llm]``: the providers fastgw calls and the models clients ask for, compiled once per config.

A provider is one account at one LLM service: its kind (which adapter speaks its wire format), the
``[upstreams.NAME]`` it is reached through (TLS, pools, timeouts, circuit breaking are the upstream's),
its credentials as secret references (never inline), extra headers and adapter options. A model is a
public name clients send (``model = "gpt-4o"``) mapped to ordered targets: a provider and that
provider's model name, with a weight (choice within a priority) and a priority (fallback order).
Resilience settings (retries, cool-downs, deadlines) are ``resilience.py``'s; a target's deadlines are
its own, else its provider's, else ``[llm]``'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from fastgw.ai.adapter import ProviderTarget
from fastgw.ai.price_config import PriceSpec, compile_prices
from fastgw.ai.prices import PriceTable
from fastgw.ai.resilience import (
    Deadlines,
    DeadlinesSpec,
    ProviderKey,
    ProviderKeySpec,
    Resilience,
    ResilienceSpec,
    compile_deadlines,
    compile_keys,
    compile_resilience,
)
from fastgw.config.context import CompileContext
from fastgw.config.fields import COUNT_MAX, SecretSpec, doc
from fastgw.secrets_at_rest import MasterKeys, master_keys

PROVIDER_KINDS: Final = ("openai", "azure_openai", "anthropic", "gemini")
# The statuses that move a request to the next target (before the first byte reached the client): rate
# limits (429), provider failures (5xx) and Anthropic's overload (529). 4xx other than 429 are the
# client's own mistakes: another provider would refuse them too.
DEFAULT_FALLBACK: Final = (408, 429, 500, 502, 503, 504, 529)
ATTEMPTS_MAX: Final = (10, "each attempt can wait for a provider's full timeout: more is a hang")
STATUS_MAX: Final = (599, "HTTP statuses end at 599")
CONTEXT_WINDOW_MAX: Final = (100_000_000, "100M tokens: 50x the largest context window offered today")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
_HEADER: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSpec(DeadlinesSpec):
    name: str = doc("the provider's name, used by models' targets, logs and metrics", ...)
    kind: str = doc(
        "the wire format: 'openai' (and OpenAI-compatible servers), 'azure_openai', 'anthropic', 'gemini'",
        ...,
    )
    upstream: str = doc("the [upstreams.NAME] table it is reached through (TLS, pools, timeouts)", ...)
    base_path: str = doc("path prefix of the API on the upstream, e.g. '/v1' (OpenAI), '' (Anthropic)", "")
    api_key: SecretSpec | None = doc(
        "the provider's API key, from a secret (file, env or systemd credential)", None
    )
    api_keys: tuple[ProviderKeySpec, ...] = doc(
        "several keys of this provider, chosen by weight per request (instead of api_key)", ()
    )
    headers: dict[str, str] = doc("more request headers, e.g. { OpenAI-Organization = 'org-...' }", {})
    options: dict[str, str] = doc(
        "adapter options: api_version (azure_openai), auth = 'entra' (azure_openai: the key is an Entra"
        " bearer token), anthropic_beta",
        {},
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpec(DeadlinesSpec):
    provider: str = doc("a [[llm.providers]] name", ...)
    model: str = doc("the provider's own model name (the deployment name for azure_openai)", ...)
    weight: int = doc("share of requests among targets of the same priority", 1, most=COUNT_MAX)
    priority: int = doc("lower is tried first; the next priority is the fallback", 0, most=COUNT_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    name: str = doc("the public model name clients send", ...)
    targets: tuple[TargetSpec, ...] = doc("where requests for this model go, in priority order", ...)
    drop_unsupported: tuple[str, ...] = doc(
        "parameters a target lacks that are dropped instead of refused (e.g. ['logprobs'])", ()
    )
    context_window: int = doc(
        "the model's context window in tokens (prompt and answer together); 0: unknown. A [[prompt_api]]"
        " request whose filled prompt is estimated past it is refused with a 400 before any provider call",
        0,
        most=CONTEXT_WINDOW_MAX,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmSpec(ResilienceSpec):
    providers: tuple[ProviderSpec, ...] = doc("[[llm.providers]] tables", ())
    models: tuple[ModelSpec, ...] = doc("[[llm.models]] tables", ())
    prices: tuple[PriceSpec, ...] = doc(
        "[[llm.prices]]: prices over the shipped table (docs/llm-usage.md)", ()
    )
    fallback_on: tuple[int, ...] = doc(
        "provider statuses that move a request to the next target (connect errors and timeouts always do)",
        DEFAULT_FALLBACK,
        most=STATUS_MAX,
    )
    max_attempts: int = doc("targets tried per request at most", 3, most=ATTEMPTS_MAX)
    master_key: SecretSpec | None = doc(
        "the key that encrypts provider keys stored with 'fastgw providers set-key' (AES-256-GCM): 32"
        " random bytes as 64 hex digits or base64, from a secret reference",
        None,
    )
    previous_master_keys: tuple[SecretSpec, ...] = doc(
        "retired master keys, still opening the rows they sealed until 'fastgw providers"
        " rotate-master-key' has re-encrypted them",
        (),
    )


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    kind: str
    upstream: str
    target_base: ProviderTarget  # base path, headers and options (no credential); the model is per target
    stored_key: bool = False  # no api_key in config: the key set with `fastgw providers set-key` is used
    keys: tuple[ProviderKey, ...] = ()  # api_key or api_keys: their credential headers, chosen per request


@dataclass(frozen=True, slots=True)
class Target:
    provider: Provider
    target: ProviderTarget
    weight: int
    priority: int
    deadlines: Deadlines


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    targets: tuple[Target, ...]  # sorted by priority
    context_window: int = 0  # tokens, prompt and answer together; 0: unknown (not checked)


@dataclass(frozen=True, slots=True)
class LlmConfig:
    models: dict[str, Model]
    providers: dict[str, Provider]
    fallback_on: frozenset[int]
    max_attempts: int
    master_keys: MasterKeys | None = None  # None: no provider keys can be stored (secrets_at_rest.py)
    resilience: Resilience = Resilience()
    prices: PriceTable | None = None  # None: every cost unknown (a config compiled without [llm])


def auth_headers(kind: str, key: str, options: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """The credential header each kind expects."""
    if not key:
        return ()
    if kind == "anthropic":
        return ((b"x-api-key", key.encode()),)
    if kind == "gemini":
        return ((b"x-goog-api-key", key.encode()),)
    if kind == "azure_openai" and options.get("auth") != "entra":
        return ((b"api-key", key.encode()),)
    return ((b"authorization", b"Bearer " + key.encode()),)


def _key_headers(kind: str, options: Mapping[str, str]) -> Callable[[str], tuple[tuple[bytes, bytes], ...]]:
    return lambda key: auth_headers(kind, key, options)


def compile_llm(spec: LlmSpec, ctx: CompileContext) -> LlmConfig:
    resilience = compile_resilience(spec, ctx)
    defaults = resilience.deadlines
    provider_deadlines: dict[str, Deadlines] = {}
    providers: dict[str, Provider] = {}
    for i, p in enumerate(spec.providers):
        key = f"llm.providers[{i}]"
        if not _NAME.fullmatch(p.name):
            raise ctx.error(
                f"{key}.name", f"{p.name!r} is not a provider name (letters, digits, . _ : / @ -)"
            )
        if p.name in providers:
            raise ctx.error(f"{key}.name", f"a provider named {p.name!r} is defined twice")
        if p.kind not in PROVIDER_KINDS:
            raise ctx.error(f"{key}.kind", f"{p.kind!r} is not one of {', '.join(PROVIDER_KINDS)}")
        if p.upstream not in ctx.upstreams:
            raise ctx.error(f"{key}.upstream", f"no upstream named {p.upstream!r}")
        if p.base_path and (not p.base_path.startswith("/") or p.base_path.endswith("/")):
            raise ctx.error(f"{key}.base_path", "starts with '/' and does not end with one, e.g. '/v1'")
        keys = compile_keys(p.api_key, p.api_keys, key, ctx, _key_headers(p.kind, p.options))
        headers: list[tuple[bytes, bytes]] = []
        for name, value in p.headers.items():
            if not _HEADER.fullmatch(name) or any(c in value for c in "\r\n\0"):
                raise ctx.error(f"{key}.headers.{name}", "not a valid header field")
            headers.append((name.lower().encode(), value.encode()))
        if p.kind == "azure_openai" and "api_version" not in p.options:
            raise ctx.error(
                f"{key}.options.api_version", "azure_openai needs an api_version, e.g. '2024-10-21'"
            )
        base = ProviderTarget(p.name, "", p.base_path, tuple(headers), dict(p.options))
        providers[p.name] = Provider(p.name, p.kind, p.upstream, base, not keys, keys)
        provider_deadlines[p.name] = compile_deadlines(p, defaults, key, ctx)
    models: dict[str, Model] = {}
    for i, m in enumerate(spec.models):
        key = f"llm.models[{i}]"
        if not _NAME.fullmatch(m.name):
            raise ctx.error(f"{key}.name", f"{m.name!r} is not a model name")
        if m.name in models:
            raise ctx.error(f"{key}.name", f"a model named {m.name!r} is defined twice")
        if not m.targets:
            raise ctx.error(f"{key}.targets", "at least one target")
        targets = []
        for j, t in enumerate(m.targets):
            provider = providers.get(t.provider)
            if provider is None:
                raise ctx.error(f"{key}.targets[{j}].provider", f"no provider named {t.provider!r}")
            if t.weight < 1:
                raise ctx.error(f"{key}.targets[{j}].weight", "at least 1")
            base = provider.target_base
            target = ProviderTarget(
                provider.name,
                t.model,
                base.base_path,
                base.headers,
                base.options,
                frozenset(m.drop_unsupported),
            )
            deadlines = compile_deadlines(t, provider_deadlines[t.provider], f"{key}.targets[{j}]", ctx)
            targets.append(Target(provider, target, t.weight, t.priority, deadlines))
        targets.sort(key=lambda t: t.priority)
        models[m.name] = Model(m.name, tuple(targets), m.context_window)
    for i, status in enumerate(spec.fallback_on):
        if not 400 <= status <= 599:
            raise ctx.error(f"llm.fallback_on[{i}]", f"{status} is not an error status")
    if spec.max_attempts < 1:
        raise ctx.error("llm.max_attempts", "at least 1")
    return LlmConfig(
        models,
        providers,
        frozenset(spec.fallback_on),
        spec.max_attempts,
        _master_keys(spec, ctx),
        resilience,
        compile_prices(spec.prices, {n: p.kind for n, p in providers.items()}, ctx.error),
    )


def _master_keys(spec: LlmSpec, ctx: CompileContext) -> MasterKeys | None:
    if spec.master_key is None:
        if spec.previous_master_keys:
            raise ctx.error(
                "llm.previous_master_keys", "needs llm.master_key (the key they were replaced by)"
            )
        return None
    previous = tuple(
        ctx.secret(f"llm.previous_master_keys[{i}]", ref) for i, ref in enumerate(spec.previous_master_keys)
    )
    return master_keys(ctx.secret("llm.master_key", spec.master_key), previous)
