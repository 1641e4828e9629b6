"""A consumer's data on request (GDPR/CCPA): everything held about it, exported as JSON; and its
erasure.

Erasure removes the consumer and its keys (they stop on every worker, and, through the change log, on
every node) and rewrites its name or id in usage rows (store/tables.py CONSUMER_USAGE: quota counts,
the LLM ledger) to a fresh random pseudonym, so totals still add up and nothing leads back to the person.
It is one transaction, and its audit record names only the pseudonym and counts, no personal data.
Audit records written before the erasure keep what they said (the log is a hash chain: rewriting one
record would break it); [retention] audit_files bounds how long rotated audit files are kept.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastgw.control.consumers import KeyService, KeyServiceError
from fastgw.control.key_views import consumer_view, deletes, key_view
from fastgw.store.tables import CONSUMER_USAGE


def _json_value(value: Any) -> Any:
    return value.hex() if isinstance(value, (bytes, bytearray, memoryview)) else value


class ConsumerPrivacy:
    """Export and erasure over the key service's store, audit log and workers."""

    def __init__(self, keys: KeyService) -> None:
        self._keys = keys
        self._store = keys.store

    def export(self, ref: str) -> dict[str, Any]:
        """Everything held about the consumer: its row, its keys (never a key or its digest) and its
        usage rows, table by table."""
        consumer = self._store.consumer(ref)
        if consumer is None:
            raise KeyServiceError(404, f"no consumer {ref!r}")
        names = [consumer.id, consumer.name]
        usage = {
            table.name: [
                {c: _json_value(v) for c, v in zip(table.columns, row, strict=True)}
                for row in self._store.read_rows(table.name, table.columns, (column, names))
            ]
            for table, column in CONSUMER_USAGE
            if self._store.has_table(table.name)
        }
        return {
            "consumer": consumer_view(consumer),
            "keys": [key_view(k, consumer) for k in self._store.api_keys(consumer.id)],
            "usage": usage,
            "exported": time.time(),
        }

    def erase(self, ref: str) -> dict[str, Any]:
        """Remove the consumer and its keys; its usage rows pass to a pseudonym. The answer (and the
        audit record) hold the pseudonym and counts only."""
        pseudonym = "erased-" + uuid.uuid4().hex[:16]
        with self._keys.changes.transaction():  # its record answered if the erasure fails
            consumer = self._store.consumer_for_update(ref)
            if consumer is None:
                raise KeyServiceError(404, f"no consumer {ref!r}")
            keys = self._store.api_keys(consumer.id)
            usage = {
                table.name: self._store.replace_values(
                    table.name, column, [consumer.id, consumer.name], pseudonym
                )
                for table, column in CONSUMER_USAGE
                if self._store.has_table(table.name)
            }
            self._store.delete_consumer(consumer.id)
            self._keys.changes.record("consumer.erase", pseudonym=pseudonym, keys=len(keys), usage_rows=usage)
        self._keys.push(deletes(keys))
        return {"erased": True, "pseudonym": pseudonym, "keys": len(keys), "usage_rows": usage}
