"""How the control process writes its audit log, by what the caller does when a record cannot be
written: an ``event`` (a reload done, a worker's note, the start) is logged loudly and stands, since it
happened whatever the log says; a ``change`` (a consumer, key or provider key) is refused, written inside
the change's store transaction, so no such change goes unaudited (README, "Failure modes"). Admin reloads
and rollbacks are recorded like a change before they are asked for, and refused when that fails
(``ControlProcess.audit_or_raise``).

A failure is logged as what it is, in one line naming the file or the store and the system's words: a
record not written (``AUDIT WRITE FAILED``: nothing of it is in the file), or a record written whose
anchor the store did not take (``AUDIT ANCHOR NOT MOVED``: it is in the file, and ``fastgw audit verify``
passes with the anchor behind it).

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
from fastgw.store.base import CommitUnknownError, Store, StoreError

ABORTED: Final = ".aborted"  # the suffix of the record that says a change did not take effect
# The suffix of the record that says a change's outcome is unknown: the connection to PostgreSQL was lost
# during its COMMIT (store.base.CommitUnknownError), so the database may have made it or not.
OUTCOME_UNKNOWN: Final = ".outcome_unknown"
ANSWERS: Final = (ABORTED, OUTCOME_UNKNOWN)  # the records that answer a change's record, not changes
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


def cause(exc: BaseException) -> str:
    """What failed, in one line for a log or an answer: an OSError as its file and the system's words
    (``/var/lib/fastgw/audit.log: No space left on device``), a StoreError as it is (it names its
    database: ``/var/lib/fastgw/fastgw.db: database or disk is full``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


class Auditing:
    def __init__(self, audit: AuditLog, log: Callable[[str], None]) -> None:
        self.audit = audit
        self._log = log

    def event(self, event: str, **fields: Any) -> None:
        """Record what happened; a record that cannot be written (or anchored) is logged, one line saying
        which of the two, and the event stands."""
        before = self.audit.seq
        try:
            self.audit.append(event, **fields)
        except (OSError, StoreError) as exc:  # the record, or (the store failing) only its anchor
            if self.audit.seq > before:
                self._log(self._not_anchored(event, exc))
            else:  # never silent; the event stands
                self._log(f"AUDIT WRITE FAILED ({event}): {cause(exc)}; this {event} is not in the audit log")

    def change(self, event: str, **fields: Any) -> dict[str, Any]:
        """The record written (its ``seq`` names it in an ``.aborted`` record). Raises
        AuditUnavailableError (503) when the record cannot be written: the change's transaction rolls
        back and the admin API answers audit-unavailable; AuditAnchorError (a 503 too) when it was written
        but its anchor was not (the store failed under it: the change cannot commit, and its record, in
        the file, is to be answered). An ``EVENT.aborted`` record that cannot be written raises its OSError
        or StoreError as it is, unlogged: AuditedChanges logs it with the record it was to answer (one
        written without its anchor is written: it is returned)."""
        before = self.audit.seq
        try:
            return self.audit.append(event, **fields)
        except (OSError, StoreError) as exc:
            seq = self.audit.seq
            if seq > before:  # in the file; the anchor catches up with the next record
                if event.endswith(ANSWERS):
                    self._log(self._not_anchored(event, exc))
                    return {"seq": seq}
                self._log(f"{self._not_anchored(event, exc)}; {event} is refused")
                raise AuditAnchorError(event, seq, cause(exc)) from None
            if event.endswith(ANSWERS):
                raise
            self._log(f"AUDIT WRITE FAILED ({event}): {cause(exc)}; not recorded, {event} is refused")
            raise AuditUnavailableError(event, cause(exc)) from None

    def _not_anchored(self, event: str, exc: BaseException) -> str:
        """The line for a record in the file whose anchor the store did not take, an event's or a change's:
        where the record is, what ``fastgw audit verify`` makes of it, and what brings the anchor back."""
        seq, anchored, path = self.audit.seq, self.audit.anchored, self.audit.path
        return (
            f"AUDIT ANCHOR NOT MOVED ({event}, seq {seq}): {cause(exc)}; the record is in {path}, the "
            f"store's anchor stays at seq {anchored}: `fastgw audit verify` passes, but would not see the "
            f"records after seq {anchored} cut off; the next record written moves the anchor once the store "
            "takes writes again (free its disk, or bring the database back)"
        )


class AuditUnavailableError(KeyServiceError):
    """A record the audit log could not take, so its action is refused (503, audit-unavailable).
    ``cause``: the file and the system's words, or the store's error (control/auditing.py ``cause``)."""

    def __init__(self, event: str, cause: str, detail: str = "the audit log cannot be written") -> None:
        super().__init__(503, f"{detail} ({event}): retry later")
        self.cause = cause
        self.what = detail


class AuditAnchorError(AuditUnavailableError):
    """A change's record is in the audit log but its anchor is not in the store (the store failed
    between the two): the change is refused like one the log cannot record, and ``seq`` names the record
    that AuditedChanges then answers."""

    def __init__(self, event: str, seq: int, cause: str) -> None:
        super().__init__(event, cause, "the audit log's anchor cannot be moved")
        self.seq = seq


class AuditedChanges:
    """The store transactions of audited changes (consumers and their keys, provider keys), and the
    records written in them: ``with changes.transaction(): ... changes.record(EVENT, **fields)``.

    A record is written before its commit, so that no change goes unaudited (``audit`` raises, the block
    fails, the change rolls back). When the block then fails all the same (the COMMIT: a lost PostgreSQL
    connection, a full disk, a conflict at commit; or anything raised in the block after a record), each
    record written in it is answered, after the rollback and in the order written, by one
    ``EVENT.aborted`` record (``EVENT.outcome_unknown`` when the COMMIT lost its connection, so the
    change may have been made): ``original_event``, ``original_seq`` (where ``audit`` returns the record
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
        with self.answering(), self.store.transaction():
            yield

    @contextmanager
    def answering(self) -> Iterator[None]:
        """The records written in the block are answered if it fails, with no store transaction: for an
        action done elsewhere (an admin reload, ControlProcess.audit_or_raise). A nested block joins the
        outer one."""
        if self._written is not None:
            yield
            return
        written: list[dict[str, Any]] = []
        self._written = written
        try:
            yield
        except BaseException as exc:
            self._written = None  # the .aborted records are not the block's
            suffix = OUTCOME_UNKNOWN if isinstance(exc, CommitUnknownError) else ABORTED
            for original in written:
                self._answer(original, type(exc).__name__, suffix)
            raise
        finally:
            self._written = None

    def _answer(self, original: dict[str, Any], reason: str, suffix: str) -> None:
        event = original["original_event"] + suffix
        try:
            self._audit(event, **original, reason=reason)
        except Exception as exc:  # the caller gets the change's own error, not this one
            seq, what = original.get("original_seq", "?"), original["original_event"]
            took = "may or may not have taken" if suffix == OUTCOME_UNKNOWN else "did not take"
            self._log(
                f"AUDIT WRITE FAILED ({event}): {cause(exc)}; the record seq {seq} ({what}) stands for a"
                f" change that {took} effect ({reason})"
            )
