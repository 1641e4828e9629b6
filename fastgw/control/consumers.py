"""Consumers and API keys, in the control process: the store's only writer, the workers' only source.

Every change is written to the store, recorded in the audit log (never the key, only its id and visible
prefix) and pushed to every connected worker's IdentityCache at once; a worker that connects gets the
full table. Creating or rotating a key returns its plaintext exactly once.

Rotation issues a new key with the old one's consumer, scopes, roles and routes, and sets the old key's
expiry to the end of the grace period (or leaves an earlier expiry alone), so clients can switch over. A
key is rotated once: while its successor is live, rotating it again is refused (rotate the successor).

Expiry only moves earlier, unless the caller says ``extend``; extending refuses a key that is revoked,
expired or rotated out, so an expiry that has passed stays passed (issue a new key instead).

A disabled consumer's keys leave every worker at once and come back when it is enabled; deleting a
consumer removes it and its keys from the store (the audit log keeps the whole history).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from typing import Any, Final

from fastgw.codec.control_messages import CachePush
from fastgw.key_format import display_prefix, key_digest, new_key
from fastgw.policy.identity import IDENTITY_CACHE
from fastgw.snapshot import KeySettings
from fastgw.store.base import ApiKey, Consumer, Store

# The longest lifetime, grace period or expiry distance a request may ask for. A key meant to last forever
# says so by having no expiry; beyond ~100 years a number is a mistake (and far enough out, time.gmtime,
# which renders the ISO times of lists, overflows).
MAX_SECONDS: Final = 100 * 365 * 86400.0


class KeyServiceError(Exception):
    """A request the store cannot honour (unknown consumer or key, duplicate name): 404/409/422."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and _text(v) for v in value):
        raise KeyServiceError(422, f"{what} must be a list of non-empty strings without NUL")
    return tuple(value)


def _text(value: str) -> bool:
    """Non-empty and NUL-free: no store column can hold NUL (PostgreSQL's text refuses it)."""
    return bool(value) and "\0" not in value


def _seconds(value: Any, what: str, *, zero: bool) -> float:
    """A finite number of seconds, > 0 (or >= 0 where ``zero``), at most MAX_SECONDS."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
        or value > MAX_SECONDS
    ):
        low = ">= 0" if zero else "> 0"
        raise KeyServiceError(422, f"{what} must be a number of seconds {low} and <= {MAX_SECONDS:.0f}")
    return float(value)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class KeyService:
    """The admin API's consumers and keys: store rows in, JSON-ready answers (dicts) out."""

    def __init__(
        self,
        store: Store,
        settings: Callable[[], KeySettings | None],
        audit: Callable[..., None],
        push: Callable[[CachePush], None],
        route_names: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.store = store
        self._settings = settings
        self._audit = audit
        self._push = push
        self._route_names = route_names  # the routes of the snapshot in force; None: not checked

    # -- consumers -------------------------------------------------------------------------------------
    def create_consumer(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not _text(name) or len(name) > 200:
            raise KeyServiceError(422, "name must be a non-empty string without NUL (at most 200 characters)")
        team = body.get("team", "")
        if not isinstance(team, str) or "\0" in team:
            raise KeyServiceError(422, "team must be a string without NUL")
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
        models = body.get("models")  # the llm models its keys may use (globs); absent: every model
        if models is not None:
            metadata = {**metadata, "models": list(_strings(models, "models"))}
        if self.store.consumer(name) is not None:
            raise KeyServiceError(409, f"a consumer named {name!r} exists")
        row = Consumer(
            id="c_" + uuid.uuid4().hex[:16],
            name=name,
            team=team,
            roles=_strings(body.get("roles"), "roles"),
            metadata=metadata,
            created=time.time(),
            disabled=None,
        )
        self.store.add_consumer(row)
        audited = {"name": name, "team": team, "roles": row.roles, "limits": limits, "models": models}
        self._audit("consumer.create", consumer=row.id, **audited)
        return _consumer_view(row)

    def consumers(self) -> list[dict[str, Any]]:
        return [_consumer_view(c) for c in self.store.consumers()]

    def consumer(self, ref: str) -> dict[str, Any]:
        """One consumer (by id or name) with its keys, for ``fastgw consumers show``."""
        consumer = self._consumer(ref)
        keys = [self._public(k, consumer) for k in self.store.api_keys(consumer.id)]
        return {**_consumer_view(consumer), "keys": keys}

    def disable(self, ref: str) -> dict[str, Any]:
        """Stop every key of the consumer on every worker at once; ``enable`` brings them back."""
        consumer = self._consumer(ref)
        if consumer.disabled:
            return _consumer_view(consumer)  # already: nothing changes, nothing to audit
        now = time.time()
        self.store.set_consumer_disabled(consumer.id, now)
        keys = self.store.api_keys(consumer.id)
        self._audit("consumer.disable", consumer=consumer.id, name=consumer.name, keys=_ids(keys))
        self._push(_deletes(keys))
        return _consumer_view(replace(consumer, disabled=now))

    def enable(self, ref: str) -> dict[str, Any]:
        consumer = self._consumer(ref)
        if not consumer.disabled:
            return _consumer_view(consumer)
        self.store.set_consumer_disabled(consumer.id, None)
        enabled = replace(consumer, disabled=None)
        keys = [k for k in self.store.api_keys(consumer.id) if not k.revoked]
        self._audit("consumer.enable", consumer=consumer.id, name=consumer.name, keys=_ids(keys))
        self._push(_puts((k, enabled) for k in keys))
        return _consumer_view(enabled)

    def delete_consumer(self, ref: str) -> dict[str, Any]:
        """Remove the consumer and its keys (they stop on every worker at once). The audit log keeps the
        history: this event names every key with its visible prefix."""
        consumer = self._consumer(ref)
        keys = self.store.api_keys(consumer.id)
        self._audit(
            "consumer.delete",
            consumer=consumer.id,
            name=consumer.name,
            keys=_ids(keys),
            prefixes=[k.prefix for k in keys],
        )
        self.store.delete_consumer(consumer.id)
        self._push(_deletes(keys))
        return {**_consumer_view(consumer), "deleted": True, "keys": _ids(keys)}

    def _consumer(self, ref: Any) -> Consumer:
        consumer = self.store.consumer(ref) if isinstance(ref, str) else None
        if consumer is None:
            raise KeyServiceError(404, f"no consumer {ref!r} (create it first: fastgw consumers create NAME)")
        return consumer

    # -- keys ------------------------------------------------------------------------------------------
    def _require_settings(self) -> KeySettings:
        settings = self._settings()
        if settings is None:
            raise KeyServiceError(422, "API keys need a [keys] table with a pepper in the config")
        return settings

    def _routes(self, value: Any) -> tuple[str, ...] | None:
        """A key's allowed routes: None (every route) or names of routes in the config in force."""
        if value is None:
            return None
        routes = _strings(value, "routes")
        if not routes:
            raise KeyServiceError(422, "routes must name at least one route (leave it out for every route)")
        if self._route_names is not None:
            known = set(self._route_names())
            unknown = [r for r in routes if r not in known]
            if unknown:
                raise KeyServiceError(
                    422, f"no route named {unknown[0]!r} in the config (routes: {', '.join(sorted(known))})"
                )
        return routes

    def create_key(
        self, body: dict[str, Any], *, event: str = "key.create", check_routes: bool = True
    ) -> dict[str, Any]:
        settings = self._require_settings()
        consumer = self._consumer(body.get("consumer"))
        if consumer.disabled:
            raise KeyServiceError(409, f"consumer {consumer.name!r} is disabled (enable it first)")
        expires_in = body.get("expires_in")
        if expires_in is not None:
            # 0 is refused rather than read as "never": a key that never expires has no expires_in.
            expires_in = _seconds(expires_in, "expires_in", zero=False)
        # A rotation carries the old key's routes as they are, even one a later config renamed.
        routes = self._routes(body.get("routes")) if check_routes else body.get("routes")
        plaintext = new_key()
        now = time.time()
        row = ApiKey(
            id="k_" + uuid.uuid4().hex[:16],
            consumer_id=consumer.id,
            prefix=display_prefix(plaintext),
            digest=key_digest(settings.pepper, plaintext.encode()),
            pepper_id=settings.pepper_id,
            scopes=_strings(body.get("scopes"), "scopes"),
            roles=_strings(body.get("roles"), "roles"),
            routes=routes,
            created=now,
            expires=None if expires_in is None else now + expires_in,
        )
        self.store.add_key(row)
        self._audit(
            event,
            key=row.id,
            prefix=row.prefix,
            consumer=consumer.id,
            scopes=row.scopes,
            roles=row.roles,
            routes=row.routes,
            expires=row.expires,
        )
        self._push(_puts([(row, consumer)]))
        return {**self._public(row, consumer), "key": plaintext}

    def keys(self) -> list[dict[str, Any]]:
        consumers = {c.id: c for c in self.store.consumers()}
        return [self._public(k, consumers.get(k.consumer_id)) for k in self.store.api_keys()]

    def rotate(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        old = self._key(key_id)
        now = time.time()
        if old.revoked:
            raise KeyServiceError(409, f"key {key_id} is revoked")
        if old.expires and old.expires <= now:
            raise KeyServiceError(409, f"key {key_id} has expired: issue a new key")
        successor = self.store.key(old.replaced_by) if old.replaced_by else None
        if successor is not None and self._live(successor, now):
            raise KeyServiceError(
                409, f"key {key_id} was already rotated to {successor.id}, which is live: rotate that one"
            )
        grace = _seconds(body.get("grace_seconds", 86400), "grace_seconds", zero=True)
        consumer = self._consumer(old.consumer_id)
        new = self.create_key(
            {"consumer": consumer.id, "scopes": old.scopes, "roles": old.roles, "routes": old.routes},
            event="key.rotate",
            check_routes=False,
        )
        deadline = time.time() + grace
        expires = min(old.expires, deadline) if old.expires else deadline
        self.store.update_key(replace(old, expires=expires, replaced_by=new["id"]))
        self._audit("key.rotate.grace", key=key_id, replaced_by=new["id"], expires=expires)
        self._push(_puts([(replace(old, expires=expires), consumer)]))
        # The old key's state as it was before this rotation, with its new expiry and successor.
        return {
            "new": new,
            "old": {**self._public(old, consumer), "expires": expires, "replaced_by": new["id"]},
        }

    def revoke(self, key_id: str) -> dict[str, Any]:
        row = self._key(key_id)
        revoked = replace(row, revoked=time.time())
        self.store.update_key(revoked)
        self._audit("key.revoke", key=key_id, prefix=row.prefix)
        self._push(_deletes([row]))
        return self._public(revoked, self.store.consumer(row.consumer_id))

    def expire(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Set when the key expires: ``at`` (unix time) or ``in`` (seconds from now; 0: now, the default).

        It may only move earlier; ``extend: true`` allows later, except for a key that is revoked, has
        expired (an expiry that has passed stays passed) or was rotated out (extend its successor)."""
        row = self._key(key_id)
        now = time.time()
        if row.revoked:
            raise KeyServiceError(409, f"key {key_id} is revoked")
        extend = body.get("extend", False)
        if not isinstance(extend, bool):
            raise KeyServiceError(422, "extend must be true or false")
        if "at" in body and "in" in body:
            raise KeyServiceError(422, "give at or in, not both")
        if "at" in body:
            at = body["at"]
            if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
                raise KeyServiceError(422, "at must be a unix time in seconds")
            if at > now + MAX_SECONDS:
                raise KeyServiceError(422, f"at must be at most {MAX_SECONDS:.0f} seconds from now")
            at = max(float(at), now)  # a time in the past means now
        else:
            at = now + _seconds(body.get("in", 0), "in", zero=True)
        current = row.expires
        if current is not None and at > current and not extend:
            raise KeyServiceError(
                409,
                f"key {key_id} expires {_when(current)}: expiry only moves earlier"
                " (extend moves it later: --extend, or extend: true)",
            )
        if extend:
            if current is not None and current <= now:
                raise KeyServiceError(409, f"key {key_id} has expired and stays expired: issue a new key")
            if row.replaced_by:
                raise KeyServiceError(
                    409, f"key {key_id} was rotated out to {row.replaced_by}: extend that one instead"
                )
        changed = replace(row, expires=at)
        self.store.update_key(changed)
        self._audit("key.expire", key=key_id, prefix=row.prefix, expires=at, previous=current, extend=extend)
        consumer = self._consumer(row.consumer_id)
        self._push_key(changed, consumer)
        return self._public(changed, consumer)

    def update(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Change a key's scopes, roles or allowed routes in place (``routes: null``: every route); the
        key itself, its id and its expiry stay. Fields left out keep their value."""
        row = self._key(key_id)
        if row.revoked:
            raise KeyServiceError(409, f"key {key_id} is revoked")
        unknown = sorted(set(body) - {"scopes", "roles", "routes"})
        if unknown:
            raise KeyServiceError(422, f"cannot change {unknown[0]!r} (scopes, roles and routes can change)")
        changes: dict[str, Any] = {}
        for field in ("scopes", "roles"):
            if field in body:
                changes[field] = _strings(body[field], field)
        if "routes" in body:
            changes["routes"] = self._routes(body["routes"])
        changes = {name: value for name, value in changes.items() if value != getattr(row, name)}
        if not changes:
            raise KeyServiceError(422, "nothing to change (give scopes, roles or routes that differ)")
        changed = replace(row, **changes)
        self.store.update_key(changed)
        before = {name: getattr(row, name) for name in changes}
        self._audit("key.update", key=key_id, prefix=row.prefix, before=before, after=changes)
        consumer = self._consumer(row.consumer_id)
        self._push_key(changed, consumer)
        return self._public(changed, consumer)

    def full_table(self) -> CachePush:
        """Every usable key, for a worker that just connected."""
        consumers = {c.id: c for c in self.store.consumers() if not c.disabled}
        entries = {
            k.digest.hex(): wire_identity(k, consumers[k.consumer_id])
            for k in self.store.api_keys()
            if not k.revoked and k.consumer_id in consumers
        }
        return CachePush(IDENTITY_CACHE, full=entries)

    def _push_key(self, row: ApiKey, consumer: Consumer) -> None:
        """A changed key to every worker, unless its consumer is disabled (then no worker holds it)."""
        if not consumer.disabled:
            self._push(_puts([(row, consumer)]))

    def _key(self, key_id: str) -> ApiKey:
        row = self.store.key(key_id)
        if row is None:
            raise KeyServiceError(404, f"no key {key_id!r}")
        return row

    @staticmethod
    def _live(row: ApiKey, now: float) -> bool:
        return not row.revoked and not (row.expires and row.expires <= now)

    @staticmethod
    def _public(row: ApiKey, consumer: Consumer | None) -> dict[str, Any]:
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


def _consumer_view(consumer: Consumer) -> dict[str, Any]:
    """A consumer as the admin API answers it (lists where the row keeps tuples)."""
    view = asdict(consumer)
    view["roles"] = list(consumer.roles)
    return view


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


def _puts(keys: Iterable[tuple[ApiKey, Consumer]]) -> CachePush:
    return CachePush(IDENTITY_CACHE, put={r.digest.hex(): wire_identity(r, consumer) for r, consumer in keys})


def _deletes(keys: Iterable[ApiKey]) -> CachePush:
    return CachePush(IDENTITY_CACHE, delete=tuple(k.digest.hex() for k in keys))


def _ids(keys: list[ApiKey]) -> list[str]:
    return [k.id for k in keys]
