"""Counters kept by modules above the metrics layer, process-wide, that the metrics sink copies into the
worker's shard at each flush (sinks/metrics.py, metrics/shared.py's H_* header ints): the LLM budget
alerts' deliveries (ai/budget_alerts.py), whose webhooks come and go with reloads while the counts may
only grow. Plain ints: every writer runs on the worker's event loop."""

from __future__ import annotations

from typing import Final


class BudgetAlertTally:
    """What became of the budget alerts this worker raised, since it started."""

    __slots__ = ("delivered", "dropped", "failed")

    def __init__(self) -> None:
        self.delivered = 0  # a webhook accepted it (2xx)
        self.failed = 0  # refused (a 4xx but 408/425/429), or given up after every try
        self.dropped = 0  # never sent: a full queue's oldest, or queued when the route's alerts went away


BUDGET_ALERTS: Final = BudgetAlertTally()
