"""The worker's cluster participant (counters/cluster.py's ``ClusterCounts``), or None when no Redis is
configured: set at start and on reload, read on the request path by every snapshot's rate limits and
budgets and by the metrics sink.

Its own compiled module (fastgw/native.py) with a native class: a compiled caller reads
``CLUSTER.current`` as a struct field. Held in cluster.py (interpreted: it talks to Redis), each read was a
module-dict lookup plus a generic attribute lookup, 3 % of an LLM token-limit check.
"""

from __future__ import annotations

from typing import Final

from fastgw.counters.cluster import ClusterCounts
from fastgw.snapshot import RedisSettings


class ClusterHolder:
    """The worker's ClusterCounts, or None when no Redis is configured (set at start and on reload)."""

    def __init__(self) -> None:
        self.current: ClusterCounts | None = None

    async def configure(self, settings: RedisSettings | None) -> None:
        current = self.current
        if current is not None and settings == current.settings:
            return
        # Taken out before the await: a second configure meanwhile (a reload's, spawned, and the
        # shutdown's) finds nothing to stop twice, and starts nothing the first would then overwrite.
        self.current = None
        if current is not None:
            await current.stop()
        if settings is not None:
            counts = ClusterCounts(settings)
            counts.start()
            self.current = counts


# The worker's cluster participant. Process-global on purpose: one Redis connection and one flush Task
# per worker, kept across reloads (reconfigured only when [rate_limits.redis] changes: worker.py), and
# read on the request path by every snapshot's limits and by the metrics sink. Not injected through the
# compile context: it is started and stopped with the worker's event loop, not with a compile.
CLUSTER: Final = ClusterHolder()
