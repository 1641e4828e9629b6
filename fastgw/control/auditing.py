"""How the control process writes its audit log, by what the caller does when a record cannot be
written: an ``event`` (a reload done, a worker's note, the start) is logged loudly and stands, since it
happened whatever the log says; a ``change`` (a consumer, key or provider key) is refused, written inside
the change's store transaction, so no such change goes unaudited (README, "Failure modes"). Admin reloads
refuse before acting (``ControlProcess.audit_or_raise``).

A change's record thus precedes its commit, and a commit can still fail after it: ``AuditedChanges``
answers each such record with an ``EVENT.aborted`` record, so a reader of the log can tell a change that
did not take effect (docs/operations.md, "Audit log"). A process killed between the record and the commit
answers nothing: that record is told from a made change only by the store."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from fastgw.audit import AuditLog
from fastgw.control.key_input import KeyServiceError
from fastgw.log_line import log_line
from fastgw.store.base import Store, StoreError

ABORTED: Final = ".aborted"  # the suffix of the record that says a change did not take effect
# The fields of a change's record that name what it changed, carried into its .aborted record (with the
# record's seq, which names it exactly; the rest of the record stays where it is).
IDENTIFYING: Final[tuple[str, ...]] = (
    "consumer",
    "name",
    "key",
    "prefix",
    "provider",
    "key_id",
    "pseudonym",
    "master_key",
)


class Auditing:
    def __init__(self, audit: AuditLog, log: Callable[[str], None]) -> None:
        self.audit = audit
        self._log = log

    def event(self, event: str, **fields: Any) -> None:
        try:
            self.audit.append(event, **fields)
        except (OSError, StoreError) as exc:  # the record or (store down) its anchor
            self._log(f"AUDIT WRITE FAILED ({event}): {exc}")  # never silent; the event stands

    def change(self, event: str, **fields: Any) -> dict[str, Any]:
        """The record written (its ``seq`` names it in an ``.aborted`` record). Raises KeyServiceError 503
        when the record cannot be written: the change's transaction rolls back and the admin API answers
        audit-unavailable; AuditAnchorError (a 503 too) when it was written but its anchor was not (the
        store failed under it: the change cannot commit, and its record, in the file, is to be answered).
        An ``EVENT.aborted`` record that cannot be written raises its OSError or StoreError as it is,
        unlogged: AuditedChanges logs it with the record it was to answer (one written without its anchor
        is written: it is returned)."""
        before = self.audit.seq
        try:
            return self.audit.append(event, **fields)
        except (OSError, StoreError) as exc:
            seq = self.audit.seq
            if seq > before:  # in the file; the anchor catches up with the next record
                self._log(f"AUDIT ANCHOR NOT MOVED ({event}, seq {seq}): {exc}")
                if event.endswith(ABORTED):
                    return {"seq": seq}
                raise AuditAnchorError(event, seq) from None
            if event.endswith(ABORTED):
                raise
            self._log(f"AUDIT WRITE FAILED ({event}): {exc}; the change is refused")
            raise KeyServiceError(503, f"the audit log cannot be written ({event}): retry later") from None


class AuditAnchorError(KeyServiceError):
    """A change's record is in the audit log but its anchor is not in the store (the store failed
    between the two): the change is refused like one the log cannot record, and ``seq`` names the record
    that AuditedChanges then answers."""

    def __init__(self, event: str, seq: int) -> None:
        super().__init__(503, f"the audit log cannot be written ({event}): retry later")
        self.seq = seq


class AuditedChanges:
    """The store transactions of audited changes (consumers and their keys, provider keys), and the
    records written in them: ``with changes.transaction(): ... changes.record(EVENT, **fields)``.

    A record is written before its commit, so that no change goes unaudited (``audit`` raises, the block
    fails, the change rolls back). When the block then fails all the same (the COMMIT: a lost PostgreSQL
    connection, a full disk, a conflict at commit; or anything raised in the block after a record), each
    record written in it is answered, after the rollback and in the order written, by one
    ``EVENT.aborted`` record: ``original_event``, ``original_seq`` (where ``audit`` returns the record
    written, as Auditing.change and AuditLog.append do), the original's IDENTIFYING fields and ``reason``
    (the exception's class: its text may name a host or a file, never needed to read the log). The log is
    a hash chain: a record that did not take effect cannot be taken back, only answered.

    Raises what the block (or its commit) raised, always, after the .aborted records; one that cannot be
    written is logged (one line: the record left unanswered) instead. The control process calls a service
    from its event loop, one operation at a time: one open block per instance.
    """

    def __init__(
        self, store: Store, audit: Callable[..., object], log: Callable[[str], None] = log_line
    ) -> None:
        self.store = store
        self._audit = audit
        self._log = log
        self._written: list[dict[str, Any]] | None = None  # the open block's records, as .aborted names them

    def record(self, event: str, **fields: Any) -> None:
        """Write a change's record, inside :meth:`transaction`. Raises what ``audit`` raises
        (Auditing.change: KeyServiceError 503), so the change is refused."""
        try:
            written = self._audit(event, **fields)
        except AuditAnchorError as exc:  # written all the same: the block fails, and answers it
            self._track(event, fields, exc.seq)
            raise
        self._track(event, fields, written.get("seq") if isinstance(written, Mapping) else None)

    def _track(self, event: str, fields: dict[str, Any], seq: object) -> None:
        if self._written is None:
            return
        original = {name: fields[name] for name in IDENTIFYING if name in fields}
        self._written.append(
            {"original_event": event, **({} if seq is None else {"original_seq": seq}), **original}
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The store's transaction; a nested block joins the outer one (whose end answers its records)."""
        if self._written is not None:
            yield
            return
        written: list[dict[str, Any]] = []
        self._written = written
        try:
            with self.store.transaction():
                yield
        except BaseException as exc:
            self._written = None  # the .aborted records are not the block's
            for original in written:
                self._answer(original, type(exc).__name__)
            raise
        finally:
            self._written = None

    def _answer(self, original: dict[str, Any], reason: str) -> None:
        event = original["original_event"] + ABORTED
        try:
            self._audit(event, **original, reason=reason)
        except Exception as exc:  # the caller gets the change's own error, not this one
            seq = original.get("original_seq", "?")
            self._log(
                f"AUDIT WRITE FAILED ({event}): {exc}; the record seq {seq} ({original['original_event']})"
                f" stands for a change that did not take effect ({reason})"
            )
