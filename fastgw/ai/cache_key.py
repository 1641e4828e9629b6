"""Which chat requests the response cache may answer, and the key an answer is stored under.

Only deterministic requests are cached: ``temperature`` 0, or a ``seed`` set. Any other request may
rightly get a different answer each time, and a cache would freeze one of them.

The key is a SHA-256 digest of, in order: a layout version, the route, the client format, the cache
scope (whose requests may share answers: ``scope_id``) and the pivot request (``adapter.py``) normalised
as canonical JSON (sorted keys, no spaces, integral floats written as integers so ``0`` and ``0.0`` are
one temperature). The pivot carries everything that shapes the answer: the model alias, the messages,
tools, ``stream`` and ``stream_options``, every sampling parameter; nothing is left out, so two requests
share a key only if they ask for the same thing. The client format is part of the key because an entry
holds the bytes the client was sent, in its own SDK's format (exact replay, see cache.py).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import orjson

from fastgw.ai.adapter import Json

KEY_VERSION: Final = b"fastgw-llm-cache-1"  # changed whenever what goes into a key changes
SCOPES: Final = ("consumer", "team", "route")


def deterministic(pivot: Json) -> bool:
    """``temperature`` 0 or a ``seed``: the provider is asked for the same answer every time."""
    temperature = pivot.get("temperature")
    if _number(temperature) and temperature == 0:
        return True
    seed = pivot.get("seed")
    return isinstance(seed, int) and not isinstance(seed, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def normalise(value: Any) -> Any:
    """``value`` with integral floats as integers, recursively (JSON has one number type: ``1.0`` and
    ``1`` mean the same). Dict key order needs nothing here: the digest sorts keys."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def canonical(pivot: Json) -> bytes:
    """The pivot request as canonical JSON: the same bytes for requests that mean the same."""
    return orjson.dumps(normalise(pivot), option=orjson.OPT_SORT_KEYS)


def scope_id(scope: str, identity: Any) -> str:
    """Whose requests share answers. ``consumer``: the consumer's own (its id); ``team``: its team's (a
    consumer without a team keeps its own); ``route``: everyone on the route. Without an identity (a route
    with ``auth = "none"``) nobody can be told apart: all anonymous requests share one scope. A JWT's
    subject and team claim are its issuer's to say: scoped per issuer, so another issuer accepted on the
    same route cannot name its way into them (the same ``sub`` from two identity providers)."""
    if scope == "route":
        return "route"
    if identity is None:
        return "anonymous"
    consumer = str(getattr(identity, "consumer_id", "") or getattr(identity, "consumer", ""))
    team = str(getattr(identity, "team", ""))
    issuer = getattr(identity, "issuer", "")
    within = f"{issuer}\0" if isinstance(issuer, str) and issuer else ""  # NUL: no issuer or sub has one
    if scope == "team" and team:
        return f"team:{within}{team}"
    return f"consumer:{within}{consumer}"


def cache_key(route: str, client_format: str, scope: str, pivot: Json) -> str:
    """The hex digest an answer to ``pivot`` is stored under (see the module's docstring)."""
    digest = hashlib.sha256(KEY_VERSION)
    for part in (route, client_format, scope):
        encoded = part.encode()
        digest.update(b"%d:" % len(encoded) + encoded)  # length-prefixed: no two splits read the same
    digest.update(canonical(pivot))
    return digest.hexdigest()
