"""What the admin API may ask of the control process: the ``ControlAPI`` protocol, and nothing more.

The admin API (admin_api.py) turns HTTP requests into these calls; ControlProcess (process.py) answers
them. Keeping the list here, narrow, means the HTTP layer cannot reach into the process's state (its
channels, pending reloads, store), and a test can serve the admin API from a small fake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fastgw.codec.control_messages import ReloadResult
    from fastgw.control.consumers import KeyService
    from fastgw.control.ledger import LedgerWriter
    from fastgw.control.provider_keys import ProviderKeyService
    from fastgw.snapshot import Snapshot
    from fastgw.store.base import QuotaCount


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One connected worker as /status and /readyz show it."""

    slot: int
    pid: int
    snapshot: str  # the snapshot id it serves
    connected: float  # unix time its control connection was made
    connections: int  # client connections, as of its last metrics export


class ControlAPI(Protocol):
    @property
    def snapshot(self) -> Snapshot:
        """The snapshot in force."""
        ...

    @property
    def ledger(self) -> LedgerWriter:
        """The usage ledger (GET /usage)."""
        ...

    @property
    def keys(self) -> KeyService:
        """Consumers and API keys (store, audit and pushes to workers)."""
        ...

    @property
    def provider_keys(self) -> ProviderKeyService:
        """LLM provider keys, encrypted in the store (never answered back: prefixes only)."""
        ...

    @property
    def started(self) -> float:
        """Unix time the node started."""
        ...

    @property
    def loaded_at(self) -> float:
        """Unix time the snapshot in force was loaded."""
        ...

    def worker_views(self) -> list[WorkerView]:
        """The connected workers, by slot."""
        ...

    def reloading(self) -> bool:
        """Whether a reload is waiting for workers' acks."""
        ...

    async def pull_metrics(self) -> None:
        """Refresh every worker's export (whoever does not answer in time keeps its last)."""
        ...

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        """The Prometheus exposition for an ``Accept`` header: (body, content type)."""
        ...

    def quota_counts(self) -> list[QuotaCount]:
        """Quota counts in the store, newest first."""
        ...

    def audit_or_raise(self, event: str, **fields: Any) -> None:
        """Append to the audit log; AuditUnavailableError (control/auditing.py) if the record cannot be
        written or anchored (the caller refuses the action)."""
        ...

    async def request_reload(self, reason: str, timeout: float) -> ReloadResult:
        """Ask the supervisor to reload (``admin``) or roll back (``rollback``) and wait for the result;
        TimeoutError after ``timeout`` seconds."""
        ...
