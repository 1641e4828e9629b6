"""The worker's pushed caches: what the control process changes without a reload, by name.

The control process owns the store; a worker keeps in memory what its requests read from it (API key
identities and provider keys today; budgets and blocks next). Every change arrives as a
``CachePush`` naming its cache (codec/control_messages.py), and ``CACHES.apply`` hands it to the adapter
registered under that name, which reads the wire values into the cache's own types. Adding a cache is
one adapter and one ``register`` line below: no new message, no change to the control link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

from fastgw.codec.control_messages import CachePush, MessageError
from fastgw.policy.identity import IDENTITIES, IDENTITY_CACHE, IdentityCache, KeyIdentity


class PushedCache(Protocol):
    """What a cache offers the push: wire keys (strings) and wire values (JSON) in."""

    def replace_all(self, entries: Mapping[str, Any]) -> None: ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class CacheRegistry:
    """Named caches; a push for a name nobody registered is an error, not a silent no-op."""

    def __init__(self) -> None:
        self._caches: dict[str, PushedCache] = {}

    def register(self, name: str, cache: PushedCache) -> None:
        if name in self._caches:
            raise ValueError(f"a pushed cache named {name!r} is registered already")
        self._caches[name] = cache

    def names(self) -> list[str]:
        return sorted(self._caches)

    def apply(self, push: CachePush) -> None:
        """``full`` (if any) first, then puts, then deletes; MessageError if the cache is unknown or an
        entry is not what its adapter reads (what was applied before it stays)."""
        cache = self._caches.get(push.cache)
        if cache is None:
            raise MessageError(f"cache message for unknown cache {push.cache!r} (known: {self.names()})")
        try:
            if push.full is not None:
                cache.replace_all(push.full)
            for key, value in push.put.items():
                cache.put(key, value)
            for key in push.delete:
                cache.delete(key)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MessageError(f"cache {push.cache!r}: bad entry ({type(exc).__name__}: {exc})") from None


class IdentityPush:
    """API key identities: keys are key digests in hex, values KeyIdentity's wire form."""

    def __init__(self, cache: IdentityCache) -> None:
        self.cache = cache

    def replace_all(self, entries: Mapping[str, Any]) -> None:
        self.cache.replace_all({bytes.fromhex(k): KeyIdentity.from_wire(v) for k, v in entries.items()})

    def put(self, key: str, value: Any) -> None:
        self.cache.put(bytes.fromhex(key), KeyIdentity.from_wire(value))

    def delete(self, key: str) -> None:
        self.cache.delete(bytes.fromhex(key))


PROVIDER_KEYS_CACHE: Final = "provider_keys"


class ProviderKeys:
    """LLM provider keys stored with ``fastgw providers set-key``, decrypted by the control process (the
    only holder of the master key): provider name -> key. A set-key or remove reaches every worker at
    once, so the next request to that provider uses it without a reload. Never logged or shown."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    def get(self, provider: str) -> bytes | None:
        """The stored key of ``provider``, or None (none stored, or it could not be decrypted)."""
        return self._keys.get(provider)

    def names(self) -> list[str]:
        return sorted(self._keys)

    def replace_all(self, entries: Mapping[str, Any]) -> None:
        self._keys = {_provider_name(k): _key_bytes(v) for k, v in entries.items()}

    def put(self, key: str, value: Any) -> None:
        self._keys[_provider_name(key)] = _key_bytes(value)

    def delete(self, key: str) -> None:
        self._keys.pop(key, None)


def _provider_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError("a provider name is a non-empty string")
    return name


def _key_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise TypeError("a provider key is a non-empty string")  # never echoed: it may be a key
    return value.encode()


PROVIDER_KEYS: Final = ProviderKeys()  # this worker's; fastgw/ai reads it through provider_key()


def provider_key(provider: str) -> bytes | None:
    """The key stored for ``provider`` in the store (``fastgw providers set-key``), as pushed to this
    worker; None when there is none. A provider with ``api_key`` in its config uses that instead."""
    return PROVIDER_KEYS.get(provider)


CACHES: Final = CacheRegistry()
CACHES.register(IDENTITY_CACHE, IdentityPush(IDENTITIES))
CACHES.register(PROVIDER_KEYS_CACHE, PROVIDER_KEYS)
