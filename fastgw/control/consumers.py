"""Consumers and API keys, in the control process: the store's writer, the workers' only source.

Every change is written to the store, recorded in the audit log (never the key, only its id and visible
prefix) and pushed to every connected worker's IdentityCache at once; a worker that connects gets the
full table. Creating or rotating a key returns its plaintext exactly once.

**Conflicting writes.** Several nodes may share one store (PostgreSQL), so each operation is one
transaction that first reads the rows it changes locked (``key_for_update``/``consumer_for_update``:
``SELECT ... FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``), checks the state it finds there and writes.
Two nodes rotating (revoking, expiring) the same key at once are thus serialised by the database: the
second sees the first's result and is answered 409, nothing is lost or done twice. Locks are always
taken consumer first, then key, so two operations never wait on each other in a cycle. The audit record
is written inside the transaction (a change the log cannot record is refused), and one whose transaction
then fails is answered by an ``EVENT.aborted`` record (control/auditing.py AuditedChanges); the workers'
push follows the commit, so a rolled-back operation pushes nothing.

Rotation issues a new key with the old one's consumer, scopes, roles and routes, and sets the old key's
expiry to the end of the grace period (or leaves an earlier expiry alone), so clients can switch over. A
key is rotated once: while its successor is live, rotating it again is refused (rotate the successor).

Expiry only moves earlier, unless the caller says ``extend``; extending refuses a key that is revoked,
expired or rotated out, so an expiry that has passed stays passed (issue a new key instead). Revoking a
revoked key is refused too (it was revoked by someone else first).

A disabled consumer's keys leave every worker at once and come back when it is enabled; deleting a
consumer removes it and its keys from the store (the audit log keeps the whole history).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from fastgw.codec.control_messages import CachePush
from fastgw.control.auditing import AuditedChanges
from fastgw.control.key_input import (
    KeyServiceError,
    consumer_fields,
    expiry_target,
    seconds,
    strings,
    when,
)
from fastgw.control.key_views import (
    consumer_view,
    deletes,
    ids,
    key_view,
    live,
    puts,
    wire_identity,
)
from fastgw.key_format import display_prefix, key_digest, new_key
from fastgw.policy.identity import IDENTITY_CACHE
from fastgw.snapshot import KeySettings
from fastgw.store.base import ApiKey, ConflictError, Consumer, Store

__all__ = ["KeyService", "KeyServiceError", "wire_identity"]  # where callers have always found them


class KeyService:
    """The admin API's consumers and keys: store rows in, JSON-ready answers (dicts) out."""

    def __init__(
        self,
        store: Store,
        settings: Callable[[], KeySettings | None],
        audit: Callable[..., object],
        push: Callable[[CachePush], None],
        route_names: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.store = store
        self._settings = settings
        self.changes = AuditedChanges(store, audit)  # also for the operations built on this one (privacy.py)
        self._audit = self.changes.record
        self._push = push
        self.push = push
        self._route_names = route_names  # the routes of the snapshot in force; None: not checked

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One operation's transaction, its audit records answered if it fails (AuditedChanges); a
        collision with another node's write becomes a 409."""
        try:
            with self.changes.transaction():
                yield
        except ConflictError:
            raise KeyServiceError(
                409, "another change to the same consumer or key was made at the same time: look and retry"
            ) from None

    # -- consumers -------------------------------------------------------------------------------------
    def create_consumer(self, body: dict[str, Any]) -> dict[str, Any]:
        name, team, metadata, limits = consumer_fields(body)
        models = body.get("models")
        row = Consumer(
            id="c_" + uuid.uuid4().hex[:16],
            name=name,
            team=team,
            roles=strings(body.get("roles"), "roles"),
            metadata=metadata,
            created=time.time(),
            disabled=None,
        )
        exists = KeyServiceError(409, f"a consumer named {name!r} exists")
        audited = {"name": name, "team": team, "roles": row.roles, "limits": limits, "models": models}
        try:
            with self._writing():
                if self.store.consumer(name) is not None:
                    raise exists
                self.store.add_consumer(row)  # the name is UNIQUE: a concurrent twin fails here
                self._audit("consumer.create", consumer=row.id, **audited)
        except KeyServiceError as exc:
            raise exists if exc.status == 409 else exc from None
        return consumer_view(row)

    def consumers(self) -> list[dict[str, Any]]:
        return [consumer_view(c) for c in self.store.consumers()]

    def consumer(self, ref: str) -> dict[str, Any]:
        """One consumer (by id or name) with its keys, for ``fastgw consumers show``."""
        consumer = self._consumer(ref)
        keys = [key_view(k, consumer) for k in self.store.api_keys(consumer.id)]
        return {**consumer_view(consumer), "keys": keys}

    def disable(self, ref: str) -> dict[str, Any]:
        """Stop every key of the consumer on every worker at once; ``enable`` brings them back."""
        now = time.time()
        with self._writing():
            consumer = self._consumer(ref, lock=True)
            if consumer.disabled:
                return consumer_view(consumer)  # already: nothing changes, nothing to audit
            self.store.set_consumer_disabled(consumer.id, now)
            keys = self.store.api_keys(consumer.id)
            self._audit("consumer.disable", consumer=consumer.id, name=consumer.name, keys=ids(keys))
        self._push(deletes(keys))
        return consumer_view(replace(consumer, disabled=now))

    def enable(self, ref: str) -> dict[str, Any]:
        with self._writing():
            consumer = self._consumer(ref, lock=True)
            if not consumer.disabled:
                return consumer_view(consumer)
            self.store.set_consumer_disabled(consumer.id, None)
            enabled = replace(consumer, disabled=None)
            keys = [k for k in self.store.api_keys(consumer.id) if not k.revoked]
            self._audit("consumer.enable", consumer=consumer.id, name=consumer.name, keys=ids(keys))
        self._push(puts((k, enabled) for k in keys))
        return consumer_view(enabled)

    def delete_consumer(self, ref: str) -> dict[str, Any]:
        """Remove the consumer and its keys (they stop on every worker at once). The audit log keeps the
        history: this event names every key with its visible prefix."""
        with self._writing():
            consumer = self._consumer(ref, lock=True)
            keys = self.store.api_keys(consumer.id)
            self.store.delete_consumer(consumer.id)
            self._audit(
                "consumer.delete",
                consumer=consumer.id,
                name=consumer.name,
                keys=ids(keys),
                prefixes=[k.prefix for k in keys],
            )
        self._push(deletes(keys))
        return {**consumer_view(consumer), "deleted": True, "keys": ids(keys)}

    def _consumer(self, ref: Any, *, lock: bool = False) -> Consumer:
        consumer = None
        if isinstance(ref, str):
            consumer = self.store.consumer_for_update(ref) if lock else self.store.consumer(ref)
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
        routes = strings(value, "routes")
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

    def _issue(
        self, event: str, consumer: Consumer, fields: dict[str, Any], expires_in: float | None
    ) -> tuple[ApiKey, str]:
        """Store a new key for the (locked, enabled) consumer and audit it as ``event`` (in the caller's
        transaction: a key the audit log cannot record is not issued); its row and its plaintext."""
        settings = self._require_settings()
        plaintext = new_key()
        now = time.time()
        row = ApiKey(
            id="k_" + uuid.uuid4().hex[:16],
            consumer_id=consumer.id,
            prefix=display_prefix(plaintext),
            digest=key_digest(settings.pepper, plaintext.encode()),
            pepper_id=settings.pepper_id,
            scopes=strings(fields.get("scopes"), "scopes"),
            roles=strings(fields.get("roles"), "roles"),
            routes=fields.get("routes"),
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
        return row, plaintext

    def _issued(self, row: ApiKey, consumer: Consumer, plaintext: str) -> dict[str, Any]:
        """After the commit: a new key's push to the workers, its one-time answer."""
        self._push(puts([(row, consumer)]))
        return {**key_view(row, consumer), "key": plaintext}

    def create_key(self, body: dict[str, Any]) -> dict[str, Any]:
        self._require_settings()
        with self._writing():
            consumer = self._consumer(body.get("consumer"), lock=True)  # not disabled or deleted meanwhile
            if consumer.disabled:
                raise KeyServiceError(409, f"consumer {consumer.name!r} is disabled (enable it first)")
            expires_in = body.get("expires_in")
            if expires_in is not None:
                # 0 is refused rather than read as "never": a key that never expires has no expires_in.
                expires_in = seconds(expires_in, "expires_in", zero=False)
            fields = {"routes": self._routes(body.get("routes")), "scopes": body.get("scopes")}
            row, plaintext = self._issue(
                "key.create", consumer, {**fields, "roles": body.get("roles")}, expires_in
            )
        return self._issued(row, consumer, plaintext)

    def keys(self) -> list[dict[str, Any]]:
        consumers = {c.id: c for c in self.store.consumers()}
        return [key_view(k, consumers.get(k.consumer_id)) for k in self.store.api_keys()]

    def rotate(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        seen = self._key(key_id)  # unlocked: only to learn its consumer, whose lock comes first
        with self._writing():
            consumer = self._consumer(seen.consumer_id, lock=True)
            old = self._key(key_id, lock=True)  # as committed now: another node may have rotated it
            now = time.time()
            if old.revoked:
                raise KeyServiceError(409, f"key {key_id} is revoked")
            if old.expires and old.expires <= now:
                raise KeyServiceError(409, f"key {key_id} has expired: issue a new key")
            successor = self.store.key(old.replaced_by) if old.replaced_by else None
            if successor is not None and live(successor, now):
                raise KeyServiceError(
                    409, f"key {key_id} was already rotated to {successor.id}, which is live: rotate that one"
                )
            grace = seconds(body.get("grace_seconds", 86400), "grace_seconds", zero=True)
            if consumer.disabled:
                raise KeyServiceError(409, f"consumer {consumer.name!r} is disabled (enable it first)")
            # A rotation carries the old key's routes as they are, even one a later config renamed.
            fields = {"scopes": old.scopes, "roles": old.roles, "routes": old.routes}
            row, plaintext = self._issue("key.rotate", consumer, fields, None)
            deadline = time.time() + grace
            expires = min(old.expires, deadline) if old.expires else deadline
            self.store.update_key(replace(old, expires=expires, replaced_by=row.id))
            self._audit("key.rotate.grace", key=key_id, replaced_by=row.id, expires=expires)
        new = self._issued(row, consumer, plaintext)
        self._push(puts([(replace(old, expires=expires), consumer)]))
        # The old key's state as it was before this rotation, with its new expiry and successor.
        return {
            "new": new,
            "old": {**key_view(old, consumer), "expires": expires, "replaced_by": row.id},
        }

    def revoke(self, key_id: str) -> dict[str, Any]:
        with self._writing():
            row = self._key(key_id, lock=True)
            if row.revoked:
                raise KeyServiceError(409, f"key {key_id} is revoked already ({when(row.revoked)})")
            revoked = replace(row, revoked=time.time())
            self.store.update_key(revoked)
            self._audit("key.revoke", key=key_id, prefix=row.prefix)
        self._push(deletes([row]))
        return key_view(revoked, self.store.consumer(row.consumer_id))

    def expire(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Set when the key expires: ``at`` (unix time) or ``in`` (seconds from now; 0: now, the default).

        It may only move earlier; ``extend: true`` allows later, except for a key that is revoked, has
        expired (an expiry that has passed stays passed) or was rotated out (extend its successor)."""
        with self._writing():
            row = self._key(key_id, lock=True)
            now = time.time()
            if row.revoked:
                raise KeyServiceError(409, f"key {key_id} is revoked")
            at, extend = expiry_target(body, now)
            current = row.expires
            if current is not None and at > current and not extend:
                raise KeyServiceError(
                    409,
                    f"key {key_id} expires {when(current)}: expiry only moves earlier"
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
            self._audit(
                "key.expire", key=key_id, prefix=row.prefix, expires=at, previous=current, extend=extend
            )
        consumer = self._consumer(row.consumer_id)
        self._push_key(changed, consumer)
        return key_view(changed, consumer)

    def update(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Change a key's scopes, roles or allowed routes in place (``routes: null``: every route); the
        key itself, its id and its expiry stay. Fields left out keep their value."""
        unknown = sorted(set(body) - {"scopes", "roles", "routes"})
        with self._writing():
            row = self._key(key_id, lock=True)
            if row.revoked:
                raise KeyServiceError(409, f"key {key_id} is revoked")
            if unknown:
                raise KeyServiceError(
                    422, f"cannot change {unknown[0]!r} (scopes, roles and routes can change)"
                )
            changes: dict[str, Any] = {}
            for field in ("scopes", "roles"):
                if field in body:
                    changes[field] = strings(body[field], field)
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
        return key_view(changed, consumer)

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
            self._push(puts([(row, consumer)]))

    def _key(self, key_id: str, *, lock: bool = False) -> ApiKey:
        row = self.store.key_for_update(key_id) if lock else self.store.key(key_id)
        if row is None:
            raise KeyServiceError(404, f"no key {key_id!r}")
        return row
