"""Consumers and API keys, in the control process: the store's only writer, the workers' only source.

Every change is written to the store, recorded in the audit log (never the key, only its id and visible
prefix) and pushed to every connected worker's IdentityCache at once; a worker that connects gets the
full table. Creating or rotating a key returns its plaintext exactly once.

Rotation issues a new key with the old one's consumer, scopes, roles and routes, and sets the old key's
expiry to the end of the grace period (or leaves an earlier expiry alone), so clients can switch over.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from fastgw.keys import display_prefix, key_digest, new_key
from fastgw.snapshot import KeySettings
from fastgw.store.sqlite import Store


class KeyServiceError(Exception):
    """A request the store cannot honour (unknown consumer or key, duplicate name): 404/409/422."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise KeyServiceError(422, f"{what} must be a list of non-empty strings")
    return list(value)


class KeyService:
    def __init__(
        self,
        store: Store,
        settings: Callable[[], KeySettings | None],
        audit: Callable[..., None],
        push: Callable[[dict[str, Any]], None],
    ) -> None:
        self.store = store
        self._settings = settings
        self._audit = audit
        self._push = push

    # -- consumers -------------------------------------------------------------------------------------
    def create_consumer(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not name or len(name) > 200:
            raise KeyServiceError(422, "name must be a non-empty string (at most 200 characters)")
        team = body.get("team", "")
        if not isinstance(team, str):
            raise KeyServiceError(422, "team must be a string")
        metadata = body.get("metadata", {})
        if not isinstance(metadata, dict):
            raise KeyServiceError(422, "metadata must be an object")
        limits = body.get("limits", {})
        if not isinstance(limits, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
            for k, v in limits.items()
        ):
            raise KeyServiceError(422, "limits must map limit names to positive integers")
        if limits:
            metadata = {**metadata, "limits": limits}  # per-consumer overrides of routes' limits
        if self.store.consumer(name) is not None:
            raise KeyServiceError(409, f"a consumer named {name!r} exists")
        row = {
            "id": "c_" + uuid.uuid4().hex[:16],
            "name": name,
            "team": team,
            "roles": _strings(body.get("roles"), "roles"),
            "metadata": metadata,
            "created": time.time(),
        }
        self.store.add_consumer(row)
        self._audit(
            "consumer.create", consumer=row["id"], name=name, team=team, roles=row["roles"], limits=limits
        )
        return row

    def consumers(self) -> list[dict[str, Any]]:
        return self.store.consumers()

    # -- keys ------------------------------------------------------------------------------------------
    def _require_settings(self) -> KeySettings:
        settings = self._settings()
        if settings is None:
            raise KeyServiceError(422, "API keys need a [keys] table with a pepper in the config")
        return settings

    def create_key(self, body: dict[str, Any], *, event: str = "key.create") -> dict[str, Any]:
        settings = self._require_settings()
        ref = body.get("consumer")
        consumer = self.store.consumer(ref) if isinstance(ref, str) else None
        if consumer is None:
            raise KeyServiceError(404, f"no consumer {ref!r} (create it first: fastgw consumers create NAME)")
        expires_in = body.get("expires_in")
        if expires_in is not None and (not isinstance(expires_in, (int, float)) or expires_in <= 0):
            raise KeyServiceError(422, "expires_in must be a positive number of seconds")
        routes = body.get("routes")
        plaintext = new_key()
        now = time.time()
        row = {
            "id": "k_" + uuid.uuid4().hex[:16],
            "consumer_id": consumer["id"],
            "prefix": display_prefix(plaintext),
            "digest": key_digest(settings.pepper, plaintext.encode()),
            "pepper_id": settings.pepper_id,
            "scopes": _strings(body.get("scopes"), "scopes"),
            "roles": _strings(body.get("roles"), "roles"),
            "routes": None if routes is None else _strings(routes, "routes"),
            "created": now,
            "expires": now + expires_in if expires_in else None,
            "revoked": None,
            "replaced_by": None,
        }
        self.store.add_key(row)
        self._audit(
            event,
            key=row["id"],
            prefix=row["prefix"],
            consumer=consumer["id"],
            scopes=row["scopes"],
            roles=row["roles"],
            routes=row["routes"],
            expires=row["expires"],
        )
        self._push({"t": "keys", "put": [self._wire(row, consumer)]})
        return {**self._public(row, consumer), "key": plaintext}

    def keys(self) -> list[dict[str, Any]]:
        consumers = {c["id"]: c for c in self.store.consumers()}
        return [self._public(k, consumers.get(k["consumer_id"])) for k in self.store.api_keys()]

    def rotate(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        old = self._key(key_id)
        if old["revoked"]:
            raise KeyServiceError(409, f"key {key_id} is revoked")
        grace = body.get("grace_seconds", 86400)
        if not isinstance(grace, (int, float)) or grace < 0:
            raise KeyServiceError(422, "grace_seconds must be a number of seconds >= 0")
        consumer = self.store.consumer(old["consumer_id"])
        assert consumer is not None
        new = self.create_key(
            {
                "consumer": consumer["id"],
                "scopes": old["scopes"],
                "roles": old["roles"],
                "routes": old["routes"],
            },
            event="key.rotate",
        )
        deadline = time.time() + grace
        expires = min(old["expires"], deadline) if old["expires"] else deadline
        self.store.update_key(key_id, expires=expires, replaced_by=new["id"])
        self._audit("key.rotate.grace", key=key_id, replaced_by=new["id"], expires=expires)
        self._push({"t": "keys", "put": [self._wire({**old, "expires": expires}, consumer)]})
        return {
            "new": new,
            "old": {**self._public(old, consumer), "expires": expires, "replaced_by": new["id"]},
        }

    def revoke(self, key_id: str) -> dict[str, Any]:
        row = self._key(key_id)
        now = time.time()
        self.store.update_key(key_id, revoked=now)
        self._audit("key.revoke", key=key_id, prefix=row["prefix"])
        self._push({"t": "keys", "delete": [row["digest"].hex()]})
        return {**self._public({**row, "revoked": now}, self.store.consumer(row["consumer_id"]))}

    def expire(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        row = self._key(key_id)
        if row["revoked"]:
            raise KeyServiceError(409, f"key {key_id} is revoked")
        at = body.get("at", time.time())
        if not isinstance(at, (int, float)):
            raise KeyServiceError(422, "at must be a unix time in seconds")
        self.store.update_key(key_id, expires=float(at))
        self._audit("key.expire", key=key_id, prefix=row["prefix"], expires=float(at))
        consumer = self.store.consumer(row["consumer_id"])
        assert consumer is not None
        self._push({"t": "keys", "put": [self._wire({**row, "expires": float(at)}, consumer)]})
        return self._public({**row, "expires": float(at)}, consumer)

    def full_table(self) -> dict[str, Any]:
        """Every usable key, for a worker that just connected."""
        consumers = {c["id"]: c for c in self.store.consumers()}
        entries = [
            self._wire(k, consumers[k["consumer_id"]])
            for k in self.store.api_keys()
            if not k["revoked"] and k["consumer_id"] in consumers
        ]
        return {"t": "keys", "full": entries}

    def _key(self, key_id: str) -> dict[str, Any]:
        row = self.store.key(key_id)
        if row is None:
            raise KeyServiceError(404, f"no key {key_id!r}")
        return row

    @staticmethod
    def _wire(row: dict[str, Any], consumer: dict[str, Any]) -> dict[str, Any]:
        return {
            "digest": row["digest"].hex(),
            "id": row["id"],
            "consumer_id": consumer["id"],
            "consumer": consumer["name"],
            "team": consumer["team"],
            "roles": sorted(set(consumer["roles"]) | set(row["roles"])),
            "scopes": row["scopes"],
            "routes": row["routes"],
            "expires": row["expires"] or 0.0,
            "limits": (consumer.get("metadata") or {}).get("limits", {}),
        }

    @staticmethod
    def _public(row: dict[str, Any], consumer: dict[str, Any] | None) -> dict[str, Any]:
        now = time.time()
        state = "active"
        if row["revoked"]:
            state = "revoked"
        elif row["expires"] and row["expires"] <= now:
            state = "expired"
        elif row["replaced_by"]:
            state = "rotating"
        return {
            "id": row["id"],
            "prefix": row["prefix"],
            "consumer": consumer["name"] if consumer else row["consumer_id"],
            "scopes": row["scopes"],
            "roles": row["roles"],
            "routes": row["routes"],
            "created": row["created"],
            "expires": row["expires"],
            "revoked": row["revoked"],
            "replaced_by": row["replaced_by"],
            "state": state,
        }
