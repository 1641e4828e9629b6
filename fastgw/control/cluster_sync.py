"""Other nodes' writes, applied on this node: the control process follows the shared store's change log
(store/base.py ``ChangeFeed``) and pushes what changed to its workers.

Change numbers are gapless and in commit order. This node remembers the last one it applied; a
notification (store/pg_listen.py), a reconnection or the poll below makes it read every entry after that
one and apply them in order. A notification numbered beyond the next one means some were missed (a
network blip, a restart of the listener): the log fills the gap. When the log no longer holds the next
entry (pruned while this node was away), or holds more than one batch, the node resynchronises whole:
the full identity and provider-key tables go to every worker, as when a worker connects.

Applying an entry reads the current rows, never a diff: a key is pushed as it stands now (or deleted
from workers when it is revoked, its consumer is disabled or its row is gone), so applying an entry
twice, or one this node wrote itself, does no harm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

from fastgw.codec.control_messages import CachePush, ControlMessage
from fastgw.control.consumers import KeyService, wire_identity
from fastgw.control.provider_keys import ProviderKeyService
from fastgw.policy.identity import IDENTITY_CACHE
from fastgw.store.base import Change, ChangeFeed, Store, StoreError

# The most entries applied one by one; a node further behind resynchronises whole (one full table is
# cheaper than thousands of single-key reads).
CATCH_UP_MAX: Final = 10_000
# The safety net under LISTEN/NOTIFY: the log's newest number is checked this often, so a notification
# lost without the connection dropping is applied within this time.
POLL_SECONDS: Final = 2.0
CHANGE_KEEP_SECONDS: Final = 7 * 86400  # change log entries kept: a node away longer resynchronises whole
STALE_LOG_SECONDS: Final = 60.0  # while the log cannot be read, one line this often (and one at recovery)


class ClusterSync:
    """Follows ``feed`` from its newest entry at construction (the workers get full tables on connect)."""

    def __init__(
        self,
        feed: ChangeFeed,
        store: Store,
        keys: KeyService,
        provider_keys: ProviderKeyService,
        push: Callable[[ControlMessage], None],
        log: Callable[[str], None],
    ) -> None:
        self.feed = feed
        self.store = store
        self.keys = keys
        self.provider_keys = provider_keys
        self.push = push
        self.log = log
        self.applied = feed.last_change()
        self.resyncs = 0  # whole-table resynchronisations since start
        self.stale_since: float | None = None  # monotonic time the log became unreadable; None: readable
        self._logged = 0.0

    async def follow(self, dsn: str) -> None:
        """Listen for notifications and poll the log, until cancelled (the control process stops)."""
        from fastgw.store.pg_listen import ChangeListener  # psycopg: loaded only by a node that follows

        try:
            self.feed.forget_changes(time.time() - CHANGE_KEEP_SECONDS)
        except StoreError as exc:
            self._failed(exc)
        listener = asyncio.ensure_future(ChangeListener(dsn, self.on_notice, self.log).run())
        try:
            while True:
                await asyncio.sleep(POLL_SECONDS)
                self.poll()
        finally:
            listener.cancel()

    def on_notice(self, seq: int | None) -> None:
        """A notification of change ``seq`` (None: the listener reconnected, anything may be missing)."""
        if seq is not None and seq <= self.applied:
            return  # applied already, in the catch-up of an earlier notification
        if seq is not None and seq > self.applied + 1:
            self.log(
                f"cluster: change {seq} arrived after {self.applied}: reading the missed ones from the log"
            )
        self.catch_up()

    def poll(self) -> None:
        """The safety net: catch up if the log has moved past what this node applied."""
        try:
            newest = self.feed.last_change()
        except StoreError as exc:
            self._failed(exc)
            return
        if newest != self.applied:
            self.catch_up()

    def catch_up(self) -> None:
        """Apply every logged change after the last one applied, in order; resynchronise whole when the
        log cannot fill the gap."""
        try:
            changes = self.feed.changes_since(self.applied, CATCH_UP_MAX)
            if not changes:
                if self.feed.last_change() < self.applied:
                    self.log("cluster: the change log restarted (a restored database?): resynchronising")
                    self.resync()
                self._recovered()
                return
            if changes[0].seq != self.applied + 1 or len(changes) >= CATCH_UP_MAX:
                self.log(
                    f"cluster: changes {self.applied + 1}..{changes[0].seq - 1} are no longer in the log"
                    if changes[0].seq != self.applied + 1
                    else f"cluster: more than {CATCH_UP_MAX} changes behind"
                )
                self.resync()
                self._recovered()
                return
            self._apply(changes)
            self.applied = changes[-1].seq
            self._recovered()
        except StoreError as exc:
            self._failed(exc)

    def resync(self) -> None:
        """Every worker gets the full tables, as read now; the log is followed from the number read before
        them (a change committed in between is applied again: harmless)."""
        newest = self.feed.last_change()
        self.push(self.keys.full_table())
        self.push(self.provider_keys.full_table())
        self.applied = newest
        self.resyncs += 1

    def _apply(self, changes: list[Change]) -> None:
        entries: dict[str, dict[str, Any] | None] = {}  # digest hex -> identity, None: delete
        seen: set[tuple[str, str]] = set()
        providers = False
        for change in changes:
            if change.kind == "provider":
                providers = True
                continue
            if change.digest is not None:
                entries.setdefault(change.digest.hex(), None)  # gone unless its row says otherwise
            if (change.kind, change.ref) in seen:
                continue
            seen.add((change.kind, change.ref))
            if change.kind == "key":
                row = self.store.key(change.ref)
                rows = [row] if row is not None else []
                consumer = self.store.consumer(row.consumer_id) if row is not None else None
            else:
                consumer = self.store.consumer(change.ref)
                rows = self.store.api_keys(change.ref) if consumer is not None else []
            for key in rows:
                usable = consumer is not None and not consumer.disabled and not key.revoked
                entries[key.digest.hex()] = wire_identity(key, consumer) if usable and consumer else None
        if entries:
            put = {digest: wire for digest, wire in entries.items() if wire is not None}
            delete = tuple(digest for digest, wire in entries.items() if wire is None)
            self.push(CachePush(IDENTITY_CACHE, put=put, delete=delete))
        if providers:
            self.push(self.provider_keys.full_table())

    def gauges(self) -> dict[str, float]:
        """For /metrics: how long this node's workers have served without the shared store (alert on it)."""
        stale = 0.0 if self.stale_since is None else time.monotonic() - self.stale_since
        return {"fastgw_store_stale_seconds": stale}

    def _failed(self, exc: StoreError) -> None:
        now = time.monotonic()
        if self.stale_since is None:
            self.stale_since = now
        elif now - self._logged < STALE_LOG_SECONDS:
            return
        self._logged = now
        self.log(
            f"cluster: cannot read the change log ({now - self.stale_since:.0f}s so far): {exc};"
            " workers serve what they hold (stale)"
        )

    def _recovered(self) -> None:
        if self.stale_since is not None:
            down = time.monotonic() - self.stale_since
            self.log(
                f"cluster: reading the change log again after {down:.0f}s (applied up to {self.applied})"
            )
            self.stale_since = None
