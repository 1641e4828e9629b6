"""Per-worker routing state: a target's circuit breaker opens after consecutive failures for a cool-down
that grows while the target keeps failing and resets on success; a provider's keys are chosen by weight,
and a rate-limited key rests until its reset while the others serve."""

from __future__ import annotations

import random
from collections import Counter

from fastgw.ai.adapter import ProviderTarget
from fastgw.ai.config import Model, Provider, Target
from fastgw.ai.resilience import Deadlines, ProviderKey, Resilience
from fastgw.ai.routing import KEY_REST, KeyHealth, TargetHealth, plan

DEADLINES = Deadlines(1.0, 1.0, 1.0, 1.0)


def target(name: str, priority: int = 0, weight: int = 1) -> Target:
    provider = Provider(name, "openai", "up", ProviderTarget(name, ""))
    return Target(provider, ProviderTarget(name, "m"), weight, priority, DEADLINES)


def key(index: int, weight: int = 1) -> ProviderKey:
    return ProviderKey(index, f"k{index}", weight, ((b"authorization", b"Bearer %d" % index),))


def test_cool_down_doubles_while_the_target_keeps_failing_and_resets_on_success() -> None:
    health = TargetHealth(Resilience(cool_down=5.0, cool_down_max=30.0))
    a = target("a")
    now = 100.0
    waits = []
    for _ in range(5):
        health.set_aside(a, now, None)
        assert not health.available(a, now)
        wait = 0.0
        while not health.available(a, now + wait):
            wait += 0.5
        waits.append(wait)
        now += wait
    assert waits == [5.0, 10.0, 20.0, 30.0, 30.0]  # doubled, up to cool_down_max
    health.succeeded(a)
    health.set_aside(a, now, None)
    assert not health.available(a, now + 4.5) and health.available(a, now + 5.0)


def test_failures_while_set_aside_do_not_lengthen_the_cool_down() -> None:
    """Every request that failed while the target was set aside (in flight when it opened, or trying it
    last) doubled the cool-down: ten failing together in a two-second blip set it aside for
    cool_down_max (300 s) instead of cool_down."""
    health = TargetHealth(Resilience(cool_down=5.0, cool_down_max=300.0))
    a = target("a")
    for i in range(10):
        health.set_aside(a, 100.0 + i * 0.1, None)
    assert not health.available(a, 104.9) and health.available(a, 105.0)
    health.set_aside(a, 105.0, 60.0)  # the provider's later reset, said while set aside again: believed
    health.set_aside(a, 105.1, 1.0)  # a shorter one never cuts it
    assert not health.available(a, 164.9) and health.available(a, 165.0)


def test_one_probe_at_a_time_once_the_cool_down_ends() -> None:
    """Half-open: every request after the cool-down went to the target at once; now one does, and the
    next only after cool_down more seconds (a probe cut by its client never reports)."""
    health = TargetHealth(Resilience(cool_down=5.0, cool_down_max=300.0, breaker_failures=3))
    a = target("a")
    for _ in range(3):
        health.set_aside(a, 0.0, None)
    assert health.available(a, 5.0)  # the probe
    assert not health.available(a, 5.1) and not health.available(a, 9.9)  # the others wait
    health.set_aside(a, 6.0, None)  # the probe failed: open again at once, twice as long
    assert not health.available(a, 15.9) and health.available(a, 16.0)
    assert health.available(a, 21.0)  # that probe never reported: another after cool_down
    health.succeeded(a)
    assert health.available(a, 21.1) and health.available(a, 21.2)  # closed: everyone


def test_the_breaker_opens_after_consecutive_failures_only() -> None:
    health = TargetHealth(Resilience(breaker_failures=3))
    a = target("a")
    health.set_aside(a, 0.0, None)
    health.set_aside(a, 0.0, None)
    assert health.available(a, 0.0)
    health.succeeded(a)  # the count starts again
    health.set_aside(a, 0.0, None)
    health.set_aside(a, 0.0, None)
    assert health.available(a, 0.0)
    health.set_aside(a, 0.0, None)
    assert not health.available(a, 0.0)


def test_a_reset_hint_is_believed_up_to_cool_down_max() -> None:
    health = TargetHealth(Resilience(cool_down_max=60.0))
    a, b = target("a"), target("b")
    health.set_aside(a, 0.0, 12.0)
    health.set_aside(b, 0.0, 3600.0)
    assert not health.available(a, 11.9) and health.available(a, 12.0)
    assert not health.available(b, 59.9) and health.available(b, 60.0)


def test_set_aside_targets_are_tried_last() -> None:
    health = TargetHealth()
    a, b, c = target("a"), target("b"), target("c", priority=1)
    model = Model("m", (a, b, c))
    health.set_aside(a, 0.0, None)
    for seed in range(20):
        assert plan(model, health, 1.0, 10, random.Random(seed)) == [b, c, a]


def test_keys_are_chosen_by_weight() -> None:
    keys = (key(0, 3), key(1, 1))
    health = KeyHealth()
    rng = random.Random(7)
    counts = Counter(health.choose("p", keys, 0.0, rng).index for _ in range(4000))  # type: ignore[union-attr]
    assert 0.70 < counts[0] / 4000 < 0.80


def test_a_rate_limited_key_rests_until_its_reset_while_the_others_serve() -> None:
    keys = (key(0), key(1), key(2))
    health = KeyHealth()
    rng = random.Random(1)
    health.rate_limited("p", keys[1], 10.0, 20.0)
    chosen = {health.choose("p", keys, 29.9, rng).index for _ in range(200)}  # type: ignore[union-attr]
    assert chosen == {0, 2}
    assert not health.all_resting("p", keys, 29.9)
    assert 1 in {health.choose("p", keys, 30.0, rng).index for _ in range(200)}  # type: ignore[union-attr]


def test_when_every_key_rests_the_one_back_first_is_used() -> None:
    keys = (key(0), key(1))
    health = KeyHealth()
    health.rate_limited("p", keys[0], 0.0, None)  # no hint: KEY_REST
    health.rate_limited("p", keys[1], 0.0, 2.0)
    assert health.all_resting("p", keys, 1.0)
    assert health.choose("p", keys, 1.0, random.Random()) == keys[1]
    assert not health.resting("p", keys[0], KEY_REST)


def test_a_provider_without_keys_uses_its_stored_key() -> None:
    assert KeyHealth().choose("p", (), 0.0, random.Random()) is None


def test_a_new_routes_health_goes_on_from_the_workers_own() -> None:
    """A reload builds new routes, each with its TargetLoop: they used to start knowing nothing, so a
    provider that had just said to wait 30 s was asked again by every worker's next request. Sharing the
    worker's state, a new one (under its own, newer settings) sees the target still set aside, and what
    it learns the old one sees too; a key rests by its name across a reload that reorders the keys."""
    worker = TargetHealth()
    old = TargetHealth(Resilience(cool_down=5.0), worker)
    a = target("a")
    old.set_aside(a, 0.0, 30.0)
    new = TargetHealth(Resilience(cool_down=1.0, cool_down_max=10.0), worker)
    assert not new.available(a, 9.0)
    assert new.available(a, 30.0)  # the reset believed when it was set aside; then the probe
    new.succeeded(a)
    assert old.available(a, 30.1)
    assert TargetHealth().available(a, 1.0)  # no state shared unless asked

    keys = KeyHealth()
    before = (key(0), key(1))
    KeyHealth(None, keys).rate_limited("p", before[1], 0.0, 20.0)
    after = (ProviderKey(0, "k1", 1, before[1].headers), ProviderKey(1, "k0", 1, before[0].headers))
    assert KeyHealth(None, keys).choose("p", after, 1.0, random.Random()) == after[1]  # k0: not resting
