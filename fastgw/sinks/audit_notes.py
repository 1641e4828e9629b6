"""Events a worker must put in the audit log (a budget threshold crossed: ai/budget_alerts.py). Only the
control process writes that log, so a worker queues them here and its control link sends them at each
tick (process/control_link.py ``send_audit_notes``), keeping them while the control process is away;
the control process appends each with the worker's slot. Bounded: past ``NOTES_MAX`` the oldest is
dropped and counted, so a control process away for long cannot grow a worker."""

from __future__ import annotations

from collections import deque
from typing import Any, Final

NOTES_MAX: Final = 1000  # one per threshold, period and key: far more than a worker raises per minute

Note = tuple[str, dict[str, Any]]  # (event, fields)


class AuditNotes:
    __slots__ = ("dropped", "pending")

    def __init__(self) -> None:
        self.pending: deque[Note] = deque()
        self.dropped = 0

    def note(self, event: str, fields: dict[str, Any]) -> None:
        if len(self.pending) >= NOTES_MAX:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append((event, fields))

    def take(self) -> list[Note]:
        notes = list(self.pending)
        self.pending.clear()
        return notes

    def give_back(self, notes: list[Note]) -> None:
        """Notes that could not be sent: first in line again, the bound kept (the oldest dropped)."""
        self.pending.extendleft(reversed(notes))
        while len(self.pending) > NOTES_MAX:
            self.pending.popleft()
            self.dropped += 1


# The worker's queue, process-global like the ledger book: budget alerts fill it, the control link
# empties it.
AUDIT_NOTES: Final = AuditNotes()
