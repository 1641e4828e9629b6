"""Another node's writes reach this node's workers (control/cluster_sync.py) over a real PostgreSQL store:
changes applied in order, missed notifications read from the log, a log that no longer holds what this
node missed answered by a whole resynchronisation. What a worker holds is checked in a real worker-side
identity cache fed by the pushes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from fastgw.codec.control_messages import CachePush, ControlMessage
from fastgw.control.cluster_sync import ClusterSync
from fastgw.control.consumers import KeyService
from fastgw.control.provider_keys import ProviderKeyService
from fastgw.key_format import key_digest, new_key
from fastgw.policy.identity import IdentityCache
from fastgw.proxy.caches import CacheRegistry, IdentityPush
from fastgw.snapshot import KeySettings
from fastgw.store.base import StoreError
from fastgw.store.pg_keeper import RETRY_SECONDS
from fastgw.store.postgres import PostgresStore
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_until

SETTINGS = KeySettings(pepper_id="p1", peppers={"p1": b"pepper-for-cluster-sync-tests-0001"})


@dataclass
class Nodes:
    """Node A writes through its KeyService; node B follows with ClusterSync into a worker's cache."""

    a: KeyService
    sync: ClusterSync
    worker: IdentityCache
    pushes: list[ControlMessage] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def accepts(self, plaintext: str) -> bool:
        return self.worker.lookup(plaintext.encode(), (SETTINGS.pepper,)) is not None


@pytest.fixture
def nodes(postgres_dsn: str) -> Iterator[Nodes]:
    store_a = PostgresStore(postgres_dsn, node="node-a")
    store_b = PostgresStore(postgres_dsn, node="node-b")
    registry = CacheRegistry()
    worker = IdentityCache()
    registry.register("identities", IdentityPush(worker))
    a = KeyService(store_a, lambda: SETTINGS, lambda *a, **k: None, lambda push: None)
    n = Nodes(a, None, worker)  # type: ignore[arg-type]

    def push(message: ControlMessage) -> None:
        n.pushes.append(message)
        if isinstance(message, CachePush) and message.cache == "identities":
            registry.apply(message)

    keys_b = KeyService(store_b, lambda: SETTINGS, lambda *a, **k: None, push)
    providers_b = ProviderKeyService(store_b, lambda: None, lambda *a, **k: None, push, n.logs.append)
    n.sync = ClusterSync(store_b, store_b, keys_b, providers_b, push, n.logs.append)
    push(keys_b.full_table())  # as a worker gets on connect
    yield n
    store_a.close()
    store_b.close()


def test_changes_are_applied_in_order_and_missed_notifications_are_read_from_the_log(nodes: Nodes) -> None:
    nodes.a.create_consumer({"name": "acme"})
    made = nodes.a.create_key({"consumer": "acme"})
    assert not nodes.accepts(made["key"])
    nodes.sync.on_notice(2)  # the notification of change 1 was lost: the log has it
    assert nodes.accepts(made["key"]) and nodes.sync.applied == 2
    assert any("arrived after 0" in line for line in nodes.logs)
    nodes.a.revoke(made["id"])
    nodes.sync.on_notice(None)  # a reconnection: catch up on whatever is there
    assert not nodes.accepts(made["key"])
    pushes = len(nodes.pushes)
    nodes.sync.on_notice(3)  # already applied: nothing read, nothing pushed
    assert len(nodes.pushes) == pushes


def test_disabling_and_deleting_a_consumer_reach_the_worker(nodes: Nodes) -> None:
    nodes.a.create_consumer({"name": "acme"})
    one, two = (nodes.a.create_key({"consumer": "acme"}) for _ in range(2))
    nodes.sync.poll()  # the safety net finds what no notification announced
    assert nodes.accepts(one["key"]) and nodes.accepts(two["key"])
    nodes.a.disable("acme")
    nodes.sync.poll()
    assert not nodes.accepts(one["key"]) and not nodes.accepts(two["key"])
    nodes.a.enable("acme")
    nodes.sync.poll()
    assert nodes.accepts(one["key"]) and nodes.accepts(two["key"])
    nodes.a.delete_consumer("acme")  # the rows are gone; the digests in the log still name the keys
    nodes.sync.poll()
    assert not nodes.accepts(one["key"]) and not nodes.accepts(two["key"])
    assert nodes.sync.resyncs == 0


def test_a_gap_the_log_no_longer_holds_resynchronises_whole(nodes: Nodes) -> None:
    nodes.a.create_consumer({"name": "acme"})
    made = nodes.a.create_key({"consumer": "acme"})
    nodes.a.store.forget_changes(time.time() + 1)  # type: ignore[attr-defined]  # pruned before B read it
    later = nodes.a.create_key({"consumer": "acme"})
    nodes.sync.on_notice(3)
    assert nodes.sync.resyncs == 1 and nodes.sync.applied == 3
    assert any("no longer in the log" in line for line in nodes.logs)
    assert nodes.accepts(made["key"]) and nodes.accepts(later["key"])
    full = [m for m in nodes.pushes if isinstance(m, CachePush) and m.full is not None]
    assert len(full) >= 2  # the identities (on connect, then the resync) and the provider keys


def test_an_unreachable_log_is_logged_once_and_followed_again_after(
    nodes: Nodes, postgres_server: PostgresServer
) -> None:
    nodes.a.create_consumer({"name": "acme"})
    postgres_server.stop()
    try:
        nodes.sync.poll()
        nodes.sync.poll()
        with pytest.raises(StoreError):
            nodes.a.create_consumer({"name": "other"})
        assert nodes.sync.gauges()["fastgw_store_stale_seconds"] > 0
    finally:
        postgres_server.start()
    assert sum("cannot read the change log" in line for line in nodes.logs) == 1

    made: dict[str, str] = {}

    def recovered() -> bool:
        """A write taken on node a, and node b's sync reading the log again: each store has its own
        reconnecting thread, so one may be back up to RETRY_SECONDS before the other."""
        if not made:
            try:
                made.update(nodes.a.create_key({"consumer": "acme"}))
            except StoreError:
                return False
        nodes.sync.poll()
        return any("reading the change log again" in ln for ln in nodes.logs)

    wait_until(recovered, RETRY_SECONDS + 3, "the store to take writes and be read again")  # nobody helps
    assert nodes.accepts(made["key"])
    assert nodes.sync.gauges() == {"fastgw_store_stale_seconds": 0.0}


def test_a_key_made_with_another_pepper_is_not_mistaken(nodes: Nodes) -> None:
    """The worker matches the digest the log carried, not merely some key of the consumer."""
    nodes.a.create_consumer({"name": "acme"})
    made = nodes.a.create_key({"consumer": "acme"})
    nodes.sync.poll()
    stranger = new_key()
    assert nodes.accepts(made["key"]) and not nodes.accepts(stranger)
    assert key_digest(SETTINGS.pepper, made["key"].encode()) in nodes.worker.by_digest
