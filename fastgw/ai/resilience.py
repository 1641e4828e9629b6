"""``[llm]``'s resilience settings: retries on the same target, cool-downs of failing targets, the
deadlines of each provider call, and several weighted keys per provider. Compiled once per config.

Deadlines come per target, else from the target's provider, else from ``[llm]``: a slow self-hosted
model and a fast hosted one behind the same public name need their own. They govern the llm handler's
provider calls in place of the upstream's ``first_byte_timeout`` and ``read_timeout`` (those are tuned for
proxied APIs, not for generation); the upstream's ``connect_timeout`` still bounds each connect attempt
in its pool, so the shorter of the two applies there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from fastgw.config.context import CompileContext
from fastgw.config.fields import COUNT_MAX, SecretSpec, doc
from fastgw.secret_refs import resolve_secret

RETRIES_MAX: Final = (3, "each retry may wait up to retry_wait_max: more holds a client for minutes")
BACKOFF_MAX: Final = (60, "a longer back-off is longer than any client waits")
COOL_DOWN_MAX: Final = (3600, "an hour: a target set aside longer is better removed from the config")
CONNECT_MAX: Final = (300, "a connect that takes minutes is a dead provider")
WAIT_MAX: Final = (3600, "an hour of silence is a dead stream")
TOTAL_MAX: Final = (86400, "a day: a longer deadline is no deadline at all")
KEYS_MAX: Final = 64  # more keys per provider than any account has; bounds the per-request choice
_KEY_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadlinesSpec:
    """A provider's or a target's own deadlines (unset: the next level's)."""

    connect_timeout: float | None = doc(
        "seconds until a connection carries the request (connect, TLS handshake, a free pooled"
        " connection); unset: inherited (a target's from its provider, a provider's from [llm])",
        None,
        most=CONNECT_MAX,
    )
    first_token_timeout: float | None = doc(
        "seconds from sending the request to the first token of a stream (the answer head of a"
        " non-streamed one is bounded by total_timeout); unset: inherited",
        None,
        most=WAIT_MAX,
    )
    idle_timeout: float | None = doc(
        "seconds of silence allowed between two stream events after the first token; unset: inherited",
        None,
        most=WAIT_MAX,
    )
    total_timeout: float | None = doc(
        "seconds one call to the provider may take, answer included; unset: inherited",
        None,
        most=TOTAL_MAX,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderKeySpec:
    key: SecretSpec = doc("the API key, from a secret (file, env or systemd credential)", ...)
    name: str = doc("how the access log names this key (never the key); default: its index", "")
    weight: int = doc("share of requests this key takes among the provider's keys", 1, most=COUNT_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResilienceSpec:
    retries: int = doc(
        "retries on the same target before moving on to the next (a connect error, a timeout before the"
        " first byte, or a status in fallback_on); 0: move on at once",
        0,
        most=RETRIES_MAX,
    )
    retry_backoff: float = doc(
        "seconds of the first retry's back-off; doubled for each further retry, with full jitter",
        0.25,
        most=BACKOFF_MAX,
    )
    retry_backoff_max: float = doc("the longest back-off before one retry, in seconds", 2.0, most=BACKOFF_MAX)
    retry_wait_max: float = doc(
        "the longest a provider's Retry-After / x-ratelimit-reset-* is waited for before a retry; a longer"
        " hint moves on to the next target instead",
        2.0,
        most=BACKOFF_MAX,
    )
    breaker_failures: int = doc(
        "consecutive failures of a target that set it aside (its circuit opens)", 1, most=COUNT_MAX
    )
    cool_down: float = doc(
        "seconds a target is set aside after it failed without a reset hint; doubled each time it fails"
        " again right after its cool-down, up to cool_down_max",
        5.0,
        most=COOL_DOWN_MAX,
    )
    cool_down_max: float = doc(
        "the longest cool-down, in seconds (a provider's reset hint is believed up to this long too)",
        300.0,
        most=COOL_DOWN_MAX,
    )
    connect_timeout: float = doc(
        "default seconds until the connection to a provider is made", 10.0, most=CONNECT_MAX
    )
    first_token_timeout: float = doc(
        "default seconds from sending a streamed request to its first token", 60.0, most=WAIT_MAX
    )
    idle_timeout: float = doc(
        "default seconds of silence allowed between two stream events", 60.0, most=WAIT_MAX
    )
    total_timeout: float = doc(
        "default seconds one call to a provider may take, answer included", 600.0, most=TOTAL_MAX
    )
    request_timeout: float = doc(
        "seconds all of a request's provider calls may take until its answer starts: retries, back-offs"
        " and fallbacks included, and a prompt API's output-schema retry (a started answer is bounded by its"
        " call's own deadlines); past it the client gets 504",
        900.0,
        most=TOTAL_MAX,
    )


@dataclass(frozen=True, slots=True)
class Deadlines:
    connect: float
    first_token: float
    idle: float
    total: float


@dataclass(frozen=True, slots=True)
class ProviderKey:
    """One API key of a provider, as the credential header(s) its kind expects."""

    index: int
    name: str  # what the access log shows: the configured name, else the index
    weight: int
    headers: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Resilience:
    retries: int = 0
    retry_backoff: float = 0.25
    retry_backoff_max: float = 2.0
    retry_wait_max: float = 2.0
    breaker_failures: int = 1
    cool_down: float = 5.0
    cool_down_max: float = 300.0
    deadlines: Deadlines = Deadlines(10.0, 60.0, 60.0, 600.0)
    request_timeout: float = 900.0  # all of a request's calls until its answer starts (ai/attempts.py)


def _positive(value: float, key: str, ctx: CompileContext) -> float:
    if not value > 0:
        raise ctx.error(key, "more than 0 seconds")
    return value


def compile_resilience(spec: ResilienceSpec, ctx: CompileContext) -> Resilience:
    for name in ("retry_backoff", "retry_backoff_max", "retry_wait_max", "cool_down", "cool_down_max"):
        if getattr(spec, name) < 0:
            raise ctx.error(f"llm.{name}", "0 or more seconds")
    if spec.retries < 0:
        raise ctx.error("llm.retries", "0 or more")
    if spec.breaker_failures < 1:
        raise ctx.error("llm.breaker_failures", "at least 1")
    if spec.cool_down_max < spec.cool_down:
        raise ctx.error("llm.cool_down_max", f"at least cool_down ({spec.cool_down:g})")
    deadlines = Deadlines(
        _positive(spec.connect_timeout, "llm.connect_timeout", ctx),
        _positive(spec.first_token_timeout, "llm.first_token_timeout", ctx),
        _positive(spec.idle_timeout, "llm.idle_timeout", ctx),
        _positive(spec.total_timeout, "llm.total_timeout", ctx),
    )
    return Resilience(
        spec.retries,
        spec.retry_backoff,
        spec.retry_backoff_max,
        spec.retry_wait_max,
        spec.breaker_failures,
        spec.cool_down,
        spec.cool_down_max,
        deadlines,
        _positive(spec.request_timeout, "llm.request_timeout", ctx),
    )


def compile_deadlines(spec: DeadlinesSpec, inherited: Deadlines, key: str, ctx: CompileContext) -> Deadlines:
    """``spec``'s own deadlines over the ``inherited`` ones (its provider's, or [llm]'s)."""

    def own(name: str, default: float) -> float:
        value: float | None = getattr(spec, name)
        return default if value is None else _positive(value, f"{key}.{name}", ctx)

    return Deadlines(
        own("connect_timeout", inherited.connect),
        own("first_token_timeout", inherited.first_token),
        own("idle_timeout", inherited.idle),
        own("total_timeout", inherited.total),
    )


def compile_keys(
    single: SecretSpec | None,
    several: tuple[ProviderKeySpec, ...],
    key: str,
    ctx: CompileContext,
    headers_of: Callable[[str], tuple[tuple[bytes, bytes], ...]],
) -> tuple[ProviderKey, ...]:
    """A provider's keys: ``api_key`` as one key named "0", or ``api_keys``; none: the stored key."""
    if single is not None and several:
        raise ctx.error(f"{key}.api_keys", "give api_key or api_keys, not both")
    if single is not None:
        secret = resolve_secret(ctx.secret(f"{key}.api_key", single)).decode()
        return (ProviderKey(0, "0", 1, headers_of(secret)),)
    if len(several) > KEYS_MAX:
        raise ctx.error(f"{key}.api_keys", f"at most {KEYS_MAX} keys")
    keys: list[ProviderKey] = []
    for i, k in enumerate(several):
        where = f"{key}.api_keys[{i}]"
        name = k.name or str(i)
        if not _KEY_NAME.fullmatch(name):
            raise ctx.error(f"{where}.name", f"{name!r} is not a key name (letters, digits, . _ -)")
        if any(other.name == name for other in keys):
            raise ctx.error(f"{where}.name", f"a key named {name!r} is given twice")
        if k.weight < 1:
            raise ctx.error(f"{where}.weight", "at least 1")
        secret = resolve_secret(ctx.secret(f"{where}.key", k.key)).decode()
        keys.append(ProviderKey(i, name, k.weight, headers_of(secret)))
    return tuple(keys)
