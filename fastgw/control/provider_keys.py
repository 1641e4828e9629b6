"""LLM provider keys in the control process: encrypted into the store, decrypted for the workers.

``fastgw providers set-key`` (and ``POST /providers/NAME/key``) seals a provider's key under the master
key of ``[llm] master_key`` (fastgw/secrets_at_rest.py) and stores only the ciphertext with its nonce,
master key id and display prefix. The control process, the only holder of the master key and the
store's only writer, decrypts every row and pushes the keys to each worker's ``provider_keys`` cache
(proxy/caches.py): in full when a worker connects or a reload may have changed the master keys, one
entry on each set-key or remove, so a change takes effect without a reload.

No answer, audit event or log line holds a key: they show the prefix (first and last 4 characters) and
the master key id. ``rotate-master-key`` re-encrypts, in one transaction, every row sealed under a
previous master key; while it has not run, those rows still open with the key in
``previous_master_keys``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Final

from fastgw.codec.control_messages import CachePush
from fastgw.control.auditing import AuditedChanges
from fastgw.control.consumers import KeyServiceError
from fastgw.proxy.caches import PROVIDER_KEYS_CACHE
from fastgw.secrets_at_rest import MasterKeys, Sealed, UnsealError, display_prefix, seal, unseal
from fastgw.store.base import ProviderCredential, Store

# The provider names of [[llm.providers]] (fastgw/ai/config.py): a key can be stored before the provider
# is configured, so the name is checked for shape only.
PROVIDER_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
# Provider keys travel in a request header: printable ASCII without spaces. The longest seen (Azure Entra
# tokens) are a few KiB; 16 KiB is far beyond any, and short of the admin API's 64 KiB body.
KEY_MAX_CHARS: Final = 16 * 1024
NO_MASTER_KEY: Final = (
    "storing provider keys needs [llm] master_key in the config (32 random bytes from a secret reference;"
    " make one with: openssl rand -hex 32)"
)


def _valid_key(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= KEY_MAX_CHARS
        or not all(33 <= ord(c) <= 126 for c in value)
    ):
        # never echoed: it may be most of a real key with a typo
        raise KeyServiceError(
            422, f"key must be 1 to {KEY_MAX_CHARS} printable ASCII characters without spaces"
        )
    return value


class ProviderKeyService:
    """The admin API's provider keys: JSON-ready answers (dicts) out, never a key."""

    def __init__(
        self,
        store: Store,
        master_keys: Callable[[], MasterKeys | None],
        audit: Callable[..., object],
        push: Callable[[CachePush], None],
        log: Callable[[str], None],
    ) -> None:
        self.store = store
        self._master_keys = master_keys  # those of the snapshot in force (they change on a reload)
        # Each change's transaction and audit record; a record whose transaction fails is answered.
        self._changes = AuditedChanges(store, audit, log)
        self._audit = self._changes.record
        self._push = push
        self._log = log

    def _require_master(self) -> MasterKeys:
        keys = self._master_keys()
        if keys is None:
            raise KeyServiceError(422, NO_MASTER_KEY)
        return keys

    def set_key(self, provider: str, body: dict[str, Any]) -> dict[str, Any]:
        if not PROVIDER_NAME.fullmatch(provider):
            raise KeyServiceError(422, "provider names are letters, digits and . _ : / @ - (at most 128)")
        keys = self._require_master()
        plaintext = _valid_key(body.get("key"))
        unknown = sorted(set(body) - {"key"})
        if unknown:
            raise KeyServiceError(422, f"unknown field {unknown[0]!r} (only key)")
        old = self.store.provider_credential(provider)
        now = time.time()
        sealed = seal(keys.current, provider, plaintext.encode())
        row = ProviderCredential(
            provider=provider,
            key_id=sealed.key_id,
            nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
            prefix=display_prefix(plaintext),
            created=old.created if old is not None else now,
            updated=now,
        )
        with self._changes.transaction():  # a key the audit log cannot record is not stored
            self.store.put_provider_credential(row)
            self._audit(
                "provider.set_key",
                provider=provider,
                prefix=row.prefix,
                key_id=row.key_id,
                replaced=None if old is None else old.prefix,
            )
        self._push(CachePush(PROVIDER_KEYS_CACHE, put={provider: plaintext}))
        return {"_status": 201 if old is None else 200, **self._view(row, keys)}

    def list(self) -> list[dict[str, Any]]:
        keys = self._master_keys()
        return [self._view(row, keys) for row in self.store.provider_credentials()]

    def remove(self, provider: str) -> dict[str, Any]:
        with self._changes.transaction():
            row = self.store.provider_credential(provider)
            if row is None or not self.store.delete_provider_credential(provider):
                raise KeyServiceError(404, f"no stored key for provider {provider!r}")
            self._audit("provider.remove_key", provider=provider, prefix=row.prefix, key_id=row.key_id)
        self._push(CachePush(PROVIDER_KEYS_CACHE, delete=(provider,)))
        return {"provider": provider, "prefix": row.prefix, "removed": True}

    def rotate_master_key(self) -> dict[str, Any]:
        """Re-encrypt every row not under the current master key, all or none: a row no configured key
        opens refuses the rotation (nothing changes) and names its provider and master key id."""
        keys = self._require_master()
        rows = [r for r in self.store.provider_credentials() if r.key_id != keys.current.id]
        fresh: list[ProviderCredential] = []
        for row in rows:
            try:
                plaintext = unseal(keys, row.provider, Sealed(row.key_id, row.nonce, row.ciphertext))
            except UnsealError as exc:
                raise KeyServiceError(409, f"{exc}; nothing was re-encrypted") from None
            sealed = seal(keys.current, row.provider, plaintext)
            fresh.append(
                ProviderCredential(
                    provider=row.provider,
                    key_id=sealed.key_id,
                    nonce=sealed.nonce,
                    ciphertext=sealed.ciphertext,
                    prefix=row.prefix,
                    created=row.created,
                    updated=time.time(),
                )
            )
        providers = [r.provider for r in rows]
        previous = sorted({r.key_id for r in rows})
        with self._changes.transaction():
            for row in fresh:
                self.store.put_provider_credential(row)
            self._audit(
                "provider.rotate_master_key",
                master_key=keys.current.id,
                previous=previous,
                providers=providers,
            )
        return {"master_key": keys.current.id, "previous": previous, "reencrypted": providers}

    def full_table(self) -> CachePush:
        """Every stored key that decrypts, for a worker that connected or a reload; a row that does not
        is left out and logged (by provider and master key id), and the rest still reach the workers."""
        keys = self._master_keys()
        entries: dict[str, str] = {}
        for row in self.store.provider_credentials():
            if keys is None:
                self._log(f"provider {row.provider!r} has a stored key but [llm] master_key is not set")
                continue
            try:
                sealed = Sealed(row.key_id, row.nonce, row.ciphertext)
                entries[row.provider] = unseal(keys, row.provider, sealed).decode()
            except UnsealError as exc:
                self._log(f"PROVIDER KEY UNUSABLE: {exc}")
        return CachePush(PROVIDER_KEYS_CACHE, full=entries)

    @staticmethod
    def _view(row: ProviderCredential, keys: MasterKeys | None) -> dict[str, Any]:
        """A row as the admin API answers it. ``usable``: a configured master key has its id (whether the
        ciphertext is intact shows when a worker gets it: full_table logs a row that does not open)."""
        return {
            "provider": row.provider,
            "prefix": row.prefix,
            "key_id": row.key_id,
            "usable": keys is not None and keys.by_id(row.key_id) is not None,
            "current": keys is not None and keys.current.id == row.key_id,
            "created": row.created,
            "updated": row.updated,
        }
