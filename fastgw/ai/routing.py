"""Which targets a request for a model tries, in which order, and which are set aside for a while.

Targets are grouped by priority; within a priority the order is a weighted random shuffle (each
target's chance to go first is its weight's share), so traffic spreads by weight and a failure moves to
the others of the same priority before falling back to the next one. A target whose provider said 429
or 529 is set aside until the provider's reset (Retry-After, x-ratelimit-reset-*), or for
``COOL_DOWN`` when it gave none; one that failed to connect or timed out, for ``COOL_DOWN``. A set-aside
target is still tried last rather than failing a request outright (a provider's hint can be pessimistic).
The state is per worker: each worker learns from its own traffic, which is enough to stop hammering a
provider that is refusing.
"""

from __future__ import annotations

import random
from typing import Final

from fastgw.ai.config import Model, Target

# Set aside after a failure without a reset hint: long enough to skip the provider for a burst of
# requests, short enough that a recovered provider is back within seconds.
COOL_DOWN: Final = 5.0
# A provider's reset hint is believed up to this long: a mistaken hour-long hint must not park a target.
COOL_DOWN_MAX: Final = 300.0


class TargetHealth:
    """Per worker: until when each (provider, provider model) is set aside."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}

    def set_aside(self, target: Target, now: float, seconds: float | None) -> None:
        wait = COOL_DOWN if seconds is None else min(max(seconds, 0.0), COOL_DOWN_MAX)
        self._until[(target.provider.name, target.target.model)] = now + wait

    def available(self, target: Target, now: float) -> bool:
        until = self._until.get((target.provider.name, target.target.model))
        if until is None:
            return True
        if until <= now:
            del self._until[(target.provider.name, target.target.model)]
            return True
        return False


def _weighted_order(targets: list[Target], rng: random.Random) -> list[Target]:
    """A weighted shuffle: repeatedly draw one target with probability proportional to its weight."""
    pool = list(targets)
    out = []
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
