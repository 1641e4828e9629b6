"""Pushed caches in a worker: a CachePush reaches the cache it names, and nothing reaches one it does not."""

from __future__ import annotations

from typing import Any

import pytest

from fastgw.codec.control_messages import CachePush, MessageError
from fastgw.key_format import key_digest, new_key
from fastgw.policy.identity import IDENTITY_CACHE, IdentityCache
from fastgw.proxy.caches import CACHES, CacheRegistry, IdentityPush

PEPPER = b"p" * 32


def _identity(key_id: str) -> dict[str, Any]:
    return {
        "id": key_id,
        "consumer_id": "c_1",
        "consumer": "acme",
        "roles": ["r"],
        "scopes": [],
        "routes": None,
    }


def _registry() -> tuple[CacheRegistry, IdentityCache]:
    cache = IdentityCache()
    registry = CacheRegistry()
    registry.register(IDENTITY_CACHE, IdentityPush(cache))
    return registry, cache


def test_identities_are_registered_in_every_worker() -> None:
    assert IDENTITY_CACHE in CACHES.names()


def test_a_pushed_key_is_found_and_a_deleted_one_is_gone() -> None:
    registry, cache = _registry()
    first, second = new_key().encode(), new_key().encode()
    d1, d2 = key_digest(PEPPER, first).hex(), key_digest(PEPPER, second).hex()
    registry.apply(CachePush(IDENTITY_CACHE, full={d1: _identity("k_1")}))
    registry.apply(CachePush(IDENTITY_CACHE, put={d2: _identity("k_2")}))
    found = cache.lookup(second, (PEPPER,))
    assert found is not None and found.key_id == "k_2" and found.consumer == "acme"
    registry.apply(CachePush(IDENTITY_CACHE, delete=(d1,)))
    assert cache.lookup(first, (PEPPER,)) is None
    registry.apply(CachePush(IDENTITY_CACHE, full={}))  # a reconnect's full table replaces everything
    assert cache.lookup(second, (PEPPER,)) is None


def test_a_push_to_an_unknown_cache_is_an_error_naming_it() -> None:
    registry, _ = _registry()
    with pytest.raises(MessageError, match="unknown cache 'budgets'"):
        registry.apply(CachePush("budgets", put={"x": 1}))


def test_a_bad_full_table_changes_nothing() -> None:
    registry, cache = _registry()
    key = new_key().encode()
    digest = key_digest(PEPPER, key).hex()
    registry.apply(CachePush(IDENTITY_CACHE, full={digest: _identity("k_1")}))
    with pytest.raises(MessageError, match="cache 'identities': bad entry"):
        registry.apply(
            CachePush(IDENTITY_CACHE, full={digest: _identity("k_2"), "ab": {"id": "no consumer"}})
        )
    found = cache.lookup(key, (PEPPER,))
    assert found is not None and found.key_id == "k_1"


def test_a_cache_name_is_registered_once() -> None:
    registry, _ = _registry()
    with pytest.raises(ValueError, match="registered already"):
        registry.register(IDENTITY_CACHE, IdentityPush(IdentityCache()))
