"""Consumers and keys as the outside sees them: the admin API's JSON views, and the identity a worker
holds for a key (pushed over the control socket into its IdentityCache)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from fastgw.codec.control_messages import CachePush
from fastgw.policy.identity import IDENTITY_CACHE
from fastgw.store.base import ApiKey, Consumer


def consumer_view(consumer: Consumer) -> dict[str, Any]:
    """A consumer as the admin API answers it (lists where the row keeps tuples)."""
    view = asdict(consumer)
    view["roles"] = list(consumer.roles)
    return view


def key_view(row: ApiKey, consumer: Consumer | None) -> dict[str, Any]:
    """A key as the admin API answers it: never the key, its state spelled out."""
    now = time.time()
    state = "active"
    if row.revoked:
        state = "revoked"
    elif row.expires and row.expires <= now:
        state = "expired"
    elif consumer is not None and consumer.disabled:
        state = "disabled"  # its consumer is: no worker accepts it until the consumer is enabled
    elif row.replaced_by:
        state = "rotating"
    return {
        "id": row.id,
        "prefix": row.prefix,
        "consumer": consumer.name if consumer else row.consumer_id,
        "scopes": list(row.scopes),
        "roles": list(row.roles),
        "routes": None if row.routes is None else list(row.routes),
        "created": row.created,
        "expires": row.expires,
        "revoked": row.revoked,
        "replaced_by": row.replaced_by,
        "state": state,
    }


def live(row: ApiKey, now: float) -> bool:
    return not row.revoked and not (row.expires and row.expires <= now)


def wire_identity(row: ApiKey, consumer: Consumer) -> dict[str, Any]:
    """A key as workers hold it (policy/identity.py ``KeyIdentity.from_wire``), keyed by its digest."""
    return {
        "id": row.id,
        "consumer_id": consumer.id,
        "consumer": consumer.name,
        "team": consumer.team,
        "roles": sorted(set(consumer.roles) | set(row.roles)),
        "scopes": list(row.scopes),
        "routes": None if row.routes is None else list(row.routes),
        "expires": row.expires or 0.0,
        "limits": consumer.metadata.get("limits", {}),
        "models": consumer.metadata.get("models"),  # None: every model
    }


def puts(keys: Iterable[tuple[ApiKey, Consumer]]) -> CachePush:
    return CachePush(IDENTITY_CACHE, put={r.digest.hex(): wire_identity(r, consumer) for r, consumer in keys})


def deletes(keys: Iterable[ApiKey]) -> CachePush:
    return CachePush(IDENTITY_CACHE, delete=tuple(k.digest.hex() for k in keys))


def ids(keys: list[ApiKey]) -> list[str]:
    return [k.id for k in keys]
