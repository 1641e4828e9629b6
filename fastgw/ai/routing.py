"""Which targets a request for a model tries, in which order, with which provider key; and which targets
and keys are set aside for a while.

Targets are grouped by priority; within a priority the order is a weighted random shuffle (each
target's chance to go first is its weight's share), so traffic spreads by weight and a failure moves to
the others of the same priority before falling back to the next one.

Each target has a circuit breaker (``TargetHealth``): after ``breaker_failures`` consecutive failures it
opens, and the target is set aside for a cool-down: the provider's reset hint when it gave one (429, 529
with Retry-After or x-ratelimit-reset-*), else ``cool_down`` seconds, doubled each time the target fails
again on its first request after a cool-down (half-open: that one request decides), up to
``cool_down_max``. A success closes it and forgets the failures. A set-aside target is still tried last
rather than failing a request outright (a provider's hint can be pessimistic). While it is set aside,
more failures (requests in flight when it opened, or trying it last) change nothing but a longer reset
hint: ten requests failing together in a two-second blip set it aside for ``cool_down``, not for
``cool_down_max``. Once the cool-down ends, one request at a time is its probe (half-open); another may
probe only after ``cool_down`` more seconds, so a probe that never reports (cut by its client) does not
keep the target set aside for good.

A provider's keys (``api_keys``) are chosen by weight per request among those not set aside
(``KeyHealth``): a key the provider rate-limited (429) rests until the provider's reset while the other
keys keep serving; only when every key of the provider rests is its target set aside. The state is per
worker: each worker learns from its own traffic, which is enough to stop hammering a provider that is
refusing. Within a worker it is one state (``WORKER_TARGETS``, ``WORKER_KEYS``) for every llm and prompt
route of every snapshot: a reload goes on from what was learned (it used to forget it, and every
worker's next request asked a provider that had just said to wait 30 s), and a provider one route found
down is down for the others. Targets are known by (provider, provider model), keys by (provider, key
name): a reload that points a name elsewhere carries the old state over for at most ``cool_down_max``,
and a target set aside is still tried last.
"""

from __future__ import annotations

import random
from typing import Final, TypeVar

from fastgw.ai.config import Model, Target
from fastgw.ai.resilience import ProviderKey, Resilience

# A rate-limited key without a reset hint rests this long: OpenAI's and Anthropic's per-minute windows
# reset within a minute, and a key tried again too early only earns another 429.
KEY_REST: Final = 10.0

_Weighted = TypeVar("_Weighted", Target, ProviderKey)


class TargetHealth:
    """Per worker: each target's consecutive failures and until when it is set aside."""

    __slots__ = ("_failures", "_probing", "_settings", "_streak", "_until")

    def __init__(self, settings: Resilience | None = None, shared: TargetHealth | None = None) -> None:
        """``shared``: whose state to read and write (under this one's settings); default a fresh one."""
        self._settings = settings or Resilience()
        self._until: dict[tuple[str, str], float] = {}  # open until; past it, half-open until it reports
        self._failures: dict[tuple[str, str], int] = {}  # consecutive failures since the last success
        self._streak: dict[tuple[str, str], int] = {}  # cool-downs in a row without a success: the doubling
        self._probing: dict[tuple[str, str], float] = {}  # when the half-open target's probe was let go
        if shared is not None:
            self._until, self._failures = shared._until, shared._failures
            self._streak, self._probing = shared._streak, shared._probing

    def set_aside(self, target: Target, now: float, seconds: float | None) -> None:
        """A failure of ``target``: the circuit opens once ``breaker_failures`` came in a row; a failed
        probe opens it again for twice as long; a failure while it is open changes only a reset hint."""
        key = (target.provider.name, target.target.model)
        settings = self._settings
        until = self._until.get(key)
        if until is not None and until > now:
            if seconds is not None:  # the provider's reset, if later than the one believed
                self._until[key] = max(until, now + min(max(seconds, 0.0), settings.cool_down_max))
            return
        if self._probing.pop(key, None) is None:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            if failures < settings.breaker_failures:
                return
        streak = self._streak.get(key, 0)
        self._streak[key] = streak + 1
        wait = settings.cool_down * 2.0 ** min(streak, 32) if seconds is None else max(seconds, 0.0)
        self._until[key] = now + min(wait, settings.cool_down_max)
        self._failures[key] = 0

    def succeeded(self, target: Target) -> None:
        key = (target.provider.name, target.target.model)
        self._failures.pop(key, None)
        self._streak.pop(key, None)
        self._until.pop(key, None)  # a set-aside target tried last that answered is back
        self._probing.pop(key, None)

    def available(self, target: Target, now: float) -> bool:
        """Closed; or half-open and no probe out (this request is then the probe)."""
        key = (target.provider.name, target.target.model)
        until = self._until.get(key)
        if until is None:
            return True
        if until > now:
            return False
        let_go = self._probing.get(key)
        if let_go is not None and now - let_go < self._settings.cool_down:
            return False  # another request is the probe
        self._probing[key] = now
        return True


class KeyHealth:
    """Per worker: until when each provider key is set aside after a 429."""

    __slots__ = ("_settings", "_until")

    def __init__(self, settings: Resilience | None = None, shared: KeyHealth | None = None) -> None:
        """``shared``: whose state to read and write (under this one's settings); default a fresh one."""
        self._settings = settings or Resilience()
        self._until: dict[tuple[str, str], float] = {} if shared is None else shared._until

    def rate_limited(self, provider: str, key: ProviderKey, now: float, seconds: float | None) -> None:
        wait = KEY_REST if seconds is None else max(seconds, 0.0)
        self._until[(provider, key.name)] = now + min(wait, self._settings.cool_down_max)

    def resting(self, provider: str, key: ProviderKey, now: float) -> bool:
        until = self._until.get((provider, key.name))
        if until is None:
            return False
        if until <= now:
            del self._until[(provider, key.name)]
            return False
        return True

    def choose(
        self, provider: str, keys: tuple[ProviderKey, ...], now: float, rng: random.Random
    ) -> ProviderKey | None:
        """A key by weight among those not resting; the one whose rest ends first when all rest; None
        for a provider without configured keys (its stored key is used)."""
        if not keys:
            return None
        if len(keys) == 1:
            return keys[0]
        ready = [k for k in keys if not self.resting(provider, k, now)]
        if not ready:
            return min(keys, key=lambda k: self._until.get((provider, k.name), 0.0))
        return _weighted_order(ready, rng)[0]

    def all_resting(self, provider: str, keys: tuple[ProviderKey, ...], now: float) -> bool:
        return all(self.resting(provider, k, now) for k in keys)


# This worker's target and key state, shared by every TargetLoop (ai/attempts.py) of every snapshot.
WORKER_TARGETS: Final = TargetHealth()
WORKER_KEYS: Final = KeyHealth()


def _weighted_order(items: list[_Weighted], rng: random.Random) -> list[_Weighted]:
    """A weighted shuffle: repeatedly draw one item with probability proportional to its weight."""
    pool = list(items)
    out: list[_Weighted] = []
    while pool:
        total = sum(t.weight for t in pool)
        pick = rng.random() * total
        for i, t in enumerate(pool):
            pick -= t.weight
            if pick < 0 or i == len(pool) - 1:
                out.append(pool.pop(i))
                break
    return out


def plan(model: Model, health: TargetHealth, now: float, limit: int, rng: random.Random) -> list[Target]:
    """The targets to try, at most ``limit``: available ones by priority and weight, set-aside ones last."""
    ordered: list[Target] = []
    group: list[Target] = []
    priority = None
    for target in model.targets:  # sorted by priority at compile time
        if priority is not None and target.priority != priority:
            ordered.extend(_weighted_order(group, rng))
            group = []
        priority = target.priority
        group.append(target)
    ordered.extend(_weighted_order(group, rng))
    ready = [t for t in ordered if health.available(t, now)]
    resting = [t for t in ordered if t not in ready]
    return (ready + resting)[:limit]
