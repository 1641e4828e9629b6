"""How the control process writes its audit log, by what the caller does when a record cannot be
written: an ``event`` (a reload done, a worker's note, the start) is logged loudly and stands, since it
happened whatever the log says; a ``change`` (a consumer, key or provider key) is refused, written inside
the change's store transaction, so no such change goes unaudited (README, "Failure modes"). Admin reloads
refuse before acting (``ControlProcess.audit_or_raise``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastgw.audit import AuditLog
from fastgw.control.key_input import KeyServiceError
from fastgw.store.base import StoreError


class Auditing:
    def __init__(self, audit: AuditLog, log: Callable[[str], None]) -> None:
        self.audit = audit
        self._log = log

    def event(self, event: str, **fields: Any) -> None:
        try:
            self.audit.append(event, **fields)
        except (OSError, StoreError) as exc:  # the record or (store down) its anchor
            self._log(f"AUDIT WRITE FAILED ({event}): {exc}")  # never silent; the event stands

    def change(self, event: str, **fields: Any) -> None:
        """Raises KeyServiceError 503 when the record cannot be written: the change's transaction rolls
        back and the admin API answers audit-unavailable."""
        try:
            self.audit.append(event, **fields)
        except (OSError, StoreError) as exc:
            self._log(f"AUDIT WRITE FAILED ({event}): {exc}; the change is refused")
            raise KeyServiceError(503, f"the audit log cannot be written ({event}): retry later") from None
