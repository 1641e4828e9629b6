"""Conflicting writes from two nodes sharing one store are serialised by the database: two key services,
each on its own connection (two nodes of a cluster), rotate, revoke or create the same thing at the same
moment; exactly one wins each time, the other is answered 409, and nothing is lost or done twice. On
PostgreSQL (row locks) and SQLite (one file, two connections: its write lock)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from fastgw.control.consumers import KeyService, KeyServiceError
from fastgw.snapshot import KeySettings
from fastgw.store.base import Store
from fastgw.store.postgres import PostgresStore
from fastgw.store.sqlite import SQLiteStore

SETTINGS = KeySettings(pepper_id="p1", peppers={"p1": b"pepper-for-concurrency-tests-0001"})
ROUNDS = 25  # races per test: a lost update would show in a few; the bench runs more


class Node:
    """One node's key service on its own store connection, recording its audit events."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events: list[str] = []
        self.service = KeyService(store, lambda: SETTINGS, self._audit, lambda push: None)

    def _audit(self, event: str, **fields: Any) -> None:
        self.events.append(event)


@pytest.fixture(params=["sqlite", "postgres"])
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    if request.param == "sqlite":
        path = str(tmp_path / "fastgw.db")
        stores: list[Store] = [SQLiteStore(path), SQLiteStore(path)]
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        stores = [PostgresStore(dsn, node=name, connect_timeout=5) for name in ("a", "b")]
    yield Node(stores[0]), Node(stores[1])
    for store in stores:
        store.close()


def race(a: Callable[[], Any], b: Callable[[], Any]) -> list[Any]:
    """Run both at the same moment, each on its own thread; what each returned or raised."""
    start = threading.Barrier(2)
    results: list[Any] = [None, None]

    def run(i: int, call: Callable[[], Any]) -> None:
        start.wait()
        try:
            results[i] = call()
        except KeyServiceError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def one_won(results: list[Any]) -> dict[str, Any]:
    """Exactly one call succeeded and the other got a 409; the winner's answer."""
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, KeyServiceError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].status == 409, lost[0].detail
    return won[0]


def test_rotating_the_same_key_on_two_nodes_at_once_rotates_it_once(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.service.create_consumer({"name": "acme"})
    for _ in range(ROUNDS):
        key = a.service.create_key({"consumer": "acme"})["id"]
        won = one_won(race(partial(a.service.rotate, key, {}), partial(b.service.rotate, key, {})))
        assert a.store.key(key).replaced_by == won["new"]["id"]  # type: ignore[union-attr]
    keys = a.store.api_keys()
    assert len(keys) == 2 * ROUNDS  # each original and exactly one successor
    assert sum(k.replaced_by is not None for k in keys) == ROUNDS
    assert (a.events + b.events).count("key.rotate") == ROUNDS


def test_revoking_the_same_key_on_two_nodes_at_once_revokes_it_once(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    a.service.create_consumer({"name": "acme"})
    for _ in range(ROUNDS):
        key = a.service.create_key({"consumer": "acme"})["id"]
        won = one_won(race(partial(a.service.revoke, key), partial(b.service.revoke, key)))
        assert b.store.key(key).revoked == won["revoked"]  # type: ignore[union-attr]
    assert (a.events + b.events).count("key.revoke") == ROUNDS


def test_a_rotation_racing_a_revocation_never_leaves_a_live_successor_of_a_revoked_key_unseen(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    a.service.create_consumer({"name": "acme"})
    for _ in range(ROUNDS):
        key = a.service.create_key({"consumer": "acme"})["id"]
        results = race(partial(a.service.rotate, key, {}), partial(b.service.revoke, key))
        row = a.store.key(key)
        assert row is not None and row.revoked is not None  # the revocation is never lost
        rotated, revoked = results
        if isinstance(rotated, dict):  # rotated first: the revocation then applied to the old key
            assert row.replaced_by == rotated["new"]["id"]
        else:  # revoked first: the rotation saw it
            assert rotated.status == 409 and row.replaced_by is None
        assert isinstance(revoked, dict)


def test_creating_the_same_consumer_on_two_nodes_at_once_creates_one(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    for i in range(ROUNDS):
        name = f"team-{i}"
        one_won(
            race(
                partial(a.service.create_consumer, {"name": name}),
                partial(b.service.create_consumer, {"name": name}),
            )
        )
    assert sorted(c.name for c in a.store.consumers()) == sorted(f"team-{i}" for i in range(ROUNDS))
    assert (a.events + b.events).count("consumer.create") == ROUNDS
