"""The per-worker IdentityCache: API key identities pushed by the control process, read by policies.

Not part of the Snapshot: keys change without a reload. The control process (the store's only writer)
sends the full table when a worker connects and every change as it happens (a ``CachePush`` to the cache
named ``IDENTITY_CACHE``, applied by proxy/caches.py); each update replaces one dict
entry, so a policy never sees a half-applied change. There is one cache per process (``IDENTITIES``):
compiled policies refer to it, and the worker's control link feeds it.

Lookup cost: a presented key is first looked up in a memo of keys already verified (one dict get, the
steady state), valid only while the pepper that verified it is still configured (a reload that retires a
pepper from ``keys.old_peppers`` retires its keys at once, memo or not); otherwise its checksum is
checked and its HMAC digest computed under each configured pepper (~1.7 us each) and looked up by digest.
Digests are compared through dict hashing of the HMAC output, which an attacker cannot steer, so the
lookup leaks nothing useful about stored digests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from fastgw.key_format import key_digest, well_formed

MEMO_MAX: Final = 65536  # verified keys remembered per worker before the memo is reset
IDENTITY_CACHE: Final = "identities"  # the name the control process pushes this cache by (proxy/caches.py)


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    key_id: str
    consumer_id: str
    consumer: str  # the consumer's name
    team: str
    roles: frozenset[str]
    scopes: frozenset[str]
    routes: frozenset[str] | None  # None: every route
    expires: float  # unix time; 0: never (a rotated key's grace deadline is its expiry)
    # The consumer's own numbers for limits keyed by consumer or key, by limit name (e.g. a premium tier).
    limits: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    # The llm models (glob patterns) the consumer's keys may use; None: every model (fastgw/ai/handler.py).
    models: tuple[str, ...] | None = None

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> KeyIdentity:
        routes = d.get("routes")
        return cls(
            key_id=str(d["id"]),
            consumer_id=str(d["consumer_id"]),
            consumer=str(d["consumer"]),
            team=str(d.get("team", "")),
            roles=frozenset(d.get("roles", ())),
            scopes=frozenset(d.get("scopes", ())),
            routes=None if routes is None else frozenset(routes),
            expires=float(d.get("expires") or 0.0),
            limits={str(k): int(v) for k, v in (d.get("limits") or {}).items()},
            models=None if d.get("models") is None else tuple(str(m) for m in d["models"]),
        )


class IdentityCache:
    __slots__ = ("_memo", "by_digest", "version")

    def __init__(self) -> None:
        self.by_digest: dict[bytes, KeyIdentity] = {}
        # presented key -> (its digest, the pepper that verified it)
        self._memo: dict[bytes, tuple[bytes, bytes]] = {}
        self.version = 0  # bumped by every update (tests and metrics)

    def replace_all(self, entries: dict[bytes, KeyIdentity]) -> None:
        self.by_digest = entries
        self.version += 1

    def put(self, digest: bytes, identity: KeyIdentity) -> None:
        self.by_digest[digest] = identity
        self.version += 1

    def delete(self, digest: bytes) -> None:
        self.by_digest.pop(digest, None)
        self.version += 1

    def lookup(self, key: bytes, peppers: tuple[bytes, ...]) -> KeyIdentity | None:
        hit = self._memo.get(key)
        if hit is not None and hit[1] in peppers:  # equal bytes: a reload resolves the peppers anew
            return self.by_digest.get(hit[0])
        if not well_formed(key):
            return None
        for pepper in peppers:
            digest = key_digest(pepper, key)
            identity = self.by_digest.get(digest)
            if identity is not None:
                memo = self._memo
                if len(memo) >= MEMO_MAX:
                    memo.clear()
                memo[key] = (digest, pepper)
                return identity
        return None


# The worker's API key identities. Process-global on purpose: the control link feeds it (consumers and
# keys added, revoked) independently of reloads, and every snapshot's api_key policy reads the same one.
# A compile may bring its own (CompileContext.identities): a test resolves keys without a control link.
IDENTITIES: Final = IdentityCache()
