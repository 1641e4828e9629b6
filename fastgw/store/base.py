"""The store's interface: typed rows and the ``Store`` protocol that every backend implements.

Callers (the key service, the audit log, the control process, the command line) see only this module:
rows are frozen dataclasses with ids as ``str``, times as unix seconds (``float``), digests as ``bytes``
and lists as tuples; every backend failure is a :class:`StoreError`. Nothing here names a backend: SQLite
(store/sqlite.py) and PostgreSQL (store/postgres.py) implement the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


class StoreError(Exception):
    """The store could not be opened, read or written (a backend error, in one line); the transaction in
    progress, if any, was rolled back."""


class CommitUnknownError(StoreError):
    """The connection was lost during the COMMIT itself: the database may have made the change or not,
    and nothing on this side can tell (the caller says so rather than claiming either)."""


class ConflictError(StoreError):
    """A write collided with another one made at the same time (a name taken meanwhile, a deadlock the
    database broke): nothing was written, and the caller answers 409 rather than 503."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Consumer:
    """Who holds API keys. ``disabled``: when it was disabled (its keys stop), None while enabled."""

    id: str
    name: str
    team: str
    roles: tuple[str, ...]
    metadata: dict[str, Any]  # free-form JSON object; ``limits`` holds per-consumer limit overrides
    created: float
    disabled: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """One API key: never the key itself, only its peppered digest and the visible prefix."""

    id: str
    consumer_id: str
    prefix: str
    digest: bytes
    pepper_id: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    routes: tuple[str, ...] | None  # None: every route
    created: float
    expires: float | None = None
    revoked: float | None = None
    replaced_by: str | None = None  # the successor's id once rotated


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderCredential:
    """An LLM provider's API key, encrypted (fastgw/secrets_at_rest.py): AES-256-GCM under the master key
    ``key_id``, with the provider name as associated data. ``prefix`` is all that is ever shown of it."""

    provider: str
    key_id: str
    nonce: bytes
    ciphertext: bytes
    prefix: str
    created: float
    updated: float


@dataclass(frozen=True, slots=True)
class AuditAnchor:
    """The audit log's last record (seq, MAC hex), so a truncated log is detectable (fastgw/audit.py)."""

    log: str
    seq: int
    mac: str


@dataclass(frozen=True, slots=True)
class QuotaAdmission:
    """Admissions a worker counted for one quota key and period in the current run."""

    key_hash: int
    period: int  # counters/quota.py's period code
    limit_id: str
    key: str
    count: int


@dataclass(frozen=True, slots=True)
class QuotaBase:
    """What a quota key counted in a period outside the current run (earlier runs, other nodes): a worker
    adds its own run to it."""

    key_hash: int
    period: int
    count: int


@dataclass(frozen=True, slots=True)
class QuotaCount:
    """A quota key's total in one period, as the admin API shows it."""

    limit: str
    key: str
    period: int
    count: int
    updated: float


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """What one worker's LLM exchanges added to one ledger row since its last flush (sinks/ledger.py)."""

    day: str  # the UTC day, ISO (2025-06-10)
    consumer: str  # "" for an anonymous caller
    key: str  # the API key's id ("" for other credentials)
    team: str
    model: str  # the public model name the client asked for
    provider: str  # the configured provider that answered ("" when none did)
    route: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost_nanousd: int  # the priced requests' cost in 1e-9 USD: integers, so sums are exact
    unpriced: int  # requests whose cost is unknown (no price, or no usage reported)
    errors: int


# A batch of ledger deltas as its worker numbers it: (writer, number), the writer a random id per worker
# run and the numbers rising in the order its reports are sent (process/control_link.py, control/ledger.py).
Batch = tuple[str, int]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Filters (None: any; ``since``/``until``: ISO days, inclusive, "" for open) and the columns of
    ``UsageDelta``'s dimensions (store/usage_sql.py ``GROUP_KEYS``) to group by ((): one total)."""

    since: str = ""
    until: str = ""
    consumer: str | None = None
    team: str | None = None
    model: str | None = None
    provider: str | None = None
    key: str | None = None
    route: str | None = None
    group_by: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """One row of a usage query: the group's values (by ``group_by`` name) and its sums."""

    group: tuple[tuple[str, str], ...]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    priced_cost_usd: float  # the cost of the requests with a known price
    unpriced: int
    errors: int


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered step of a backend's schema. Steps run in order, each in its own transaction, and are
    recorded in ``schema_migrations``; a step once released never changes (add a new one).

    ``adds_column`` (table, column) names the column a step adds: a database made before versioned
    migrations may already have it, and then the step is recorded without running."""

    version: int
    name: str
    statements: tuple[str, ...]
    adds_column: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a shared store's change log: what a write touched, under its change number.

    ``kind``: "key" (``ref`` a key id, ``digest`` its digest, so a node can drop a key whose row is gone),
    "consumer" (``ref`` a consumer id: its keys may have changed state) or "provider" (``ref`` a provider
    name). ``node`` is the node that wrote it."""

    seq: int
    node: str
    kind: str
    ref: str
    digest: bytes | None
    at: float


class ChangeFeed(Protocol):
    """The change log of a store that several nodes share. Every write of consumers, keys or provider
    keys takes the next change number in the write's own transaction, so numbers are gapless and in
    commit order; a node that has applied up to N reads ``changes_since(N)`` to catch up."""

    def last_change(self) -> int:
        """The newest change number (0 before the first write)."""
        ...

    def changes_since(self, seq: int, limit: int) -> list[Change]:
        """Changes numbered above ``seq``, oldest first, at most ``limit`` of them."""
        ...

    def forget_changes(self, before: float) -> None:
        """Drop entries written before ``before`` (unix time): a node away longer resynchronises whole."""
        ...


class Store(Protocol):
    """Consumers, API key digests, provider keys, quota counts and audit anchors. Each method is its own
    committed transaction unless called inside :meth:`transaction`. Every method raises
    :class:`StoreError` on a backend failure."""

    where: str  # for messages: the SQLite file, or PostgreSQL's host:port/database (never the password)

    def transaction(self) -> AbstractContextManager[None]:
        """Group calls into one transaction: committed when the block ends, rolled back if it raises.
        Nested blocks join the outer one."""
        ...

    def pending_migrations(self) -> list[Migration]:
        """The schema steps this database has not had yet, in the order they would run."""
        ...

    def migrate(self) -> list[Migration]:
        """Apply the pending steps; returns those applied. Safe against a concurrent migrator."""
        ...

    def close(self) -> None: ...

    def change_feed(self) -> ChangeFeed | None:
        """The change log other nodes' writes arrive through; None for a store only this node writes."""
        ...

    # -- audit anchors
    def audit_anchor(self, log: str) -> AuditAnchor | None: ...

    def set_audit_anchor(self, log: str, seq: int, mac: str) -> None: ...

    # -- consumers and keys
    def add_consumer(self, consumer: Consumer) -> None: ...

    def consumers(self) -> list[Consumer]:
        """Every consumer, oldest first."""
        ...

    def consumer(self, ref: str) -> Consumer | None:
        """A consumer by id or by name (an id wins)."""
        ...

    def set_consumer_disabled(self, consumer_id: str, disabled: float | None) -> None: ...

    def delete_consumer(self, consumer_id: str) -> None:
        """Remove a consumer and its keys in one transaction."""
        ...

    def add_key(self, key: ApiKey) -> None: ...

    def api_keys(self, consumer_id: str | None = None) -> list[ApiKey]:
        """Every key, or one consumer's, oldest first."""
        ...

    def key(self, key_id: str) -> ApiKey | None: ...

    def key_for_update(self, key_id: str) -> ApiKey | None:
        """Inside :meth:`transaction`: the key's row as committed now, locked against other writers until
        the transaction ends (PostgreSQL: ``SELECT ... FOR UPDATE``; SQLite's transaction holds the
        database's write lock already). A read-check-write on it is then never lost or doubled."""
        ...

    def consumer_for_update(self, ref: str) -> Consumer | None:
        """Inside :meth:`transaction`: :meth:`consumer`, its row locked as :meth:`key_for_update`'s."""
        ...

    def update_key(self, key: ApiKey) -> None:
        """Write a key's changeable fields (scopes, roles, routes, expires, revoked, replaced_by); its id,
        consumer, digest and creation time never change."""
        ...

    # -- provider credentials
    def provider_credentials(self) -> list[ProviderCredential]:
        """Every stored provider key, by provider name."""
        ...

    def provider_credential(self, provider: str) -> ProviderCredential | None: ...

    def put_provider_credential(self, row: ProviderCredential) -> None:
        """Insert or replace the provider's row (a replacement keeps the first ``created``)."""
        ...

    def delete_provider_credential(self, provider: str) -> bool:
        """Remove the provider's row; whether there was one."""
        ...

    # -- whole tables, by name (``fastgw store copy``, retention): names and columns come from the code
    # (store/tables.py), never from input.
    def has_table(self, table: str) -> bool: ...

    def count_rows(self, table: str) -> int: ...

    def read_rows(
        self, table: str, columns: Sequence[str], where: tuple[str, Sequence[Any]] | None = None
    ) -> list[tuple[Any, ...]]:
        """Every row of ``table`` (or those whose column ``where[0]`` holds one of the values
        ``where[1]``), the given columns in order (ordered by them, so reads repeat)."""
        ...

    def replace_values(self, table: str, column: str, old: Sequence[Any], new: Any) -> int:
        """Set ``column`` to ``new`` wherever it holds one of ``old``; how many rows changed."""
        ...

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Insert rows, skipping any that collide with one already there (same key); how many went in."""
        ...

    def delete_rows_before(self, table: str, column: str, before: float) -> int:
        """Delete the rows whose ``column`` (a unix time) is before ``before``; how many went."""
        ...

    # -- quotas
    def add_quota_counts(
        self, run_id: float, admissions: Sequence[QuotaAdmission], now: float, batch: Batch | None = None
    ) -> bool:
        """Add admissions counted in run ``run_id`` (the gateway's start time) to that run's own row of each
        key and period (store/quota_sql.py), in one transaction. ``batch`` (writer, number) as in
        ``add_usage``: a worker's report written before (then re-sent to a control process's successor)
        is skipped, False; True when added."""
        ...

    def quota_bases(self, run_id: float, periods: Sequence[int]) -> list[QuotaBase]:
        """For the given periods, each key's count in every run but ``run_id`` (earlier runs, other
        nodes): the asking run's workers add their own."""
        ...

    def quota_counts(self) -> list[QuotaCount]:
        """Every quota key's total per period, all runs added, most recently updated first."""
        ...

    def forget_quotas(self, before: float) -> int:
        """Drop the rows of each key and period that no run has written since ``before``; how many went."""
        ...

    # -- the usage ledger (sinks/ledger.py, store/usage_sql.py)
    def add_usage(self, deltas: Sequence[UsageDelta], now: float, batch: Batch | None = None) -> bool:
        """Add each delta to its row (created at zero), in one transaction: an upsert that adds, so a
        delta written once is counted once, whichever node or control process writes it. ``batch``
        (writer, number): numbers rise per writer, and the highest applied is recorded in the same
        transaction, so a batch written again (replayed from the spool, control/ledger_spool.py) is
        skipped: returns False then, True when added."""
        ...

    def usage(self, query: UsageQuery) -> list[UsageTotal]:
        """Sums of the rows the query's filters select, one per group, largest cost first."""
        ...
