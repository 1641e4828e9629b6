"""What a worker is told when it connects: the identity and provider-key tables and the quota bases, read
from the store; and, while the store cannot be read (a PostgreSQL outage), the tables as every worker was
last told them, so a worker replaced during the outage serves the same keys as its siblings (stale, like
theirs) instead of refusing every key until the database is back.

The control process records every push it broadcasts here (``record``): a full table replaces, puts and
deletes apply, exactly as a worker's cache applies them (proxy/caches.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastgw.codec.control_messages import CachePush, ControlMessage, QuotaBases
from fastgw.control.consumers import KeyService
from fastgw.control.provider_keys import ProviderKeyService
from fastgw.counters.quota import QUOTAS
from fastgw.store.base import Store, StoreError


class WorkerTables:
    def __init__(
        self,
        store: Store,
        keys: KeyService,
        provider_keys: ProviderKeyService,
        started: float,
        log: Callable[[str], None],
    ) -> None:
        self.store = store
        self.keys = keys
        self.provider_keys = provider_keys
        self.started = started  # the run whose quota admissions the workers count (store quota_bases)
        self.log = log
        self._told: dict[str, dict[str, Any]] = {}  # cache name -> entries, as pushed to every worker
        # The quota bases last read (counts of earlier runs and of other nodes: stale ones only miss what
        # other nodes counted since), sent while the store is down rather than none, which wiped a
        # reconnecting worker's own.
        self._bases: tuple[tuple[int, int, int], ...] | None = None

    def record(self, message: ControlMessage) -> None:
        """A message broadcast to every worker: a cache push is applied to the copy kept here."""
        if not isinstance(message, CachePush):
            return
        table = self._told.setdefault(message.cache, {})
        if message.full is not None:
            table.clear()
            table.update(message.full)
        table.update(message.put)
        for key in message.delete:
            table.pop(key, None)

    def on_connect(self, slot: int) -> list[ControlMessage]:
        """The messages a connecting worker gets first, in order."""
        periods = QUOTAS.current_periods(time.time())
        try:
            tables: list[ControlMessage] = [self.keys.full_table(), self.provider_keys.full_table()]
            bases = tuple(
                (b.key_hash, b.period, b.count) for b in self.store.quota_bases(self.started, periods)
            )
            self._bases = bases
        except StoreError as exc:
            self.log(f"worker {slot} gets the tables sent last (stale): the store is down: {exc}")
            tables = [CachePush(name, full=dict(entries)) for name, entries in self._told.items()]
            if self._bases is None:  # never read: the worker keeps what it has (none: counts from zero)
                return tables
            bases = self._bases
        for table in tables:
            self.record(table)
        return [*tables, QuotaBases(bases)]
