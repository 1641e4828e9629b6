"""Conflicting writes through two real nodes' admin APIs at the same moment: the shared PostgreSQL
serialises them, so each key is rotated (or revoked) exactly once and the loser is answered 409."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastgw.store.postgres import PostgresStore
from tests.support.cluster import admin_call, cluster_config
from tests.support.gateways import Gateway
from tests.support.ports import free_port
from tests.support.upstreams import TestUpstream

ROUNDS = 10


def at_once(calls: list[Callable[[], tuple[int, Any]]]) -> list[int]:
    """The statuses of calls made at the same moment, each from its own thread."""
    start = threading.Barrier(len(calls))
    statuses = [0] * len(calls)

    def run(i: int) -> None:
        start.wait()
        statuses[i] = calls[i]()[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return sorted(statuses)


def test_two_nodes_rotating_or_revoking_the_same_key_at_once_do_it_once(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream, secrets_dir: Path, postgres_dsn: str
) -> None:
    admins = [free_port(), free_port()]
    for admin in admins:
        gateway_factory(cluster_config(upstream.port, admin, secrets_dir, postgres_dsn), workers=1)
    assert admin_call(admins[0], "POST", "/consumers", {"name": "acme"})[0] == 201
    rotated = []
    for _ in range(ROUNDS):
        _, made = admin_call(admins[0], "POST", "/keys", {"consumer": "acme"})
        rotated.append(made["id"])
        calls = [lambda a=a, k=made["id"]: admin_call(a, "POST", f"/keys/{k}/rotate", {}) for a in admins]
        assert at_once(calls) == [201, 409]
        _, made = admin_call(admins[1], "POST", "/keys", {"consumer": "acme"})
        calls = [lambda a=a, k=made["id"]: admin_call(a, "POST", f"/keys/{k}/revoke") for a in admins]
        assert at_once(calls) == [200, 409]
    store = PostgresStore(postgres_dsn, node="check", connect_timeout=5)
    try:
        keys = store.api_keys()
    finally:
        store.close()
    originals = [k for k in keys if k.id in rotated]
    assert len(originals) == ROUNDS and all(k.replaced_by for k in originals)
    assert len(keys) == 3 * ROUNDS  # each rotated key, exactly one successor, each revoked key
    assert sum(k.revoked is not None for k in keys) == ROUNDS
