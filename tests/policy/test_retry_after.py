"""Retry-After for sliding windows: the wait ``sliding_wait`` computes is exactly when the estimate next
leaves room for one request, checked against the estimate itself over random counts and phases."""

from __future__ import annotations

import random

from fastgw.counters.algorithms import sliding_wait


def estimate(current: float, previous: float, at: float, length: float) -> float:
    """The sliding estimate ``at`` seconds into the window that holds ``current`` (nothing admitted later):
    in the next window ``current`` becomes the previous one, and after that nothing is left."""
    if at < length:
        return current + previous * (1 - at / length)
    if at < 2 * length:
        return current * (1 - (at - length) / length)
    return 0.0


def test_the_issue_case_three_per_ten_seconds_refused_at_eight() -> None:
    # 3 admitted at the start of a 10 s window, refused at 8 s. Window end (2 s) is wrong: the full window
    # then weighs 1. Room for one comes when 3 x (1 - e/10) <= 2, e = 3.33 s into the next: 5.33 s.
    wait = sliding_wait(3, 0, 3, 8.0, 10.0)
    assert abs(wait - (2 + 10 / 3)) < 1e-9
    assert estimate(3, 0, 8.0 + 2, 10.0) + 1 > 3  # the old answer: still refused then


def test_the_wait_is_exact_for_random_counts_and_phases() -> None:
    rng = random.Random(19)
    for _ in range(20000):
        length = rng.choice([1.0, 2.0, 10.0, 60.0, 3600.0])
        rate = rng.randint(1, 50)
        current = rng.randint(0, rate + 3)
        previous = rng.randint(0, 2 * rate)
        elapsed = rng.uniform(0, length * 0.999)
        wait = sliding_wait(current, previous, rate, elapsed, length)
        assert wait >= 0
        eps = 1e-9 * length
        assert estimate(current, previous, elapsed + wait + eps, length) + 1 <= rate + 1e-6
        if wait > 10 * eps:  # and not a moment sooner
            assert estimate(current, previous, elapsed + wait - 10 * eps, length) + 1 > rate
