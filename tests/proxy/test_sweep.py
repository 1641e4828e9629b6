"""The deadline sweep isolates connections: one whose handling raises is aborted, the rest still served."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fastgw.proxy.deadlines import sweep


class FakeConnection:
    multiplexed = False

    def __init__(self, *, broken: bool) -> None:
        self.broken = broken
        self.deadline = 1.0  # passed at now = 5
        self.send_deadline = 0.0
        self.deadline_kind = 0
        self.upstream = None
        self.closing = False
        self.fired = False
        self.transport = SimpleNamespace(aborted=False)
        self.transport.abort = lambda: setattr(self.transport, "aborted", True)

    def on_deadline(self, now: float) -> None:
        if self.broken:
            raise KeyError("a bug")
        self.fired = True


def test_a_connection_whose_deadline_raises_is_aborted_and_the_sweep_goes_on() -> None:
    first, broken, last = (
        FakeConnection(broken=False),
        FakeConnection(broken=True),
        FakeConnection(broken=False),
    )
    logged: list[str] = []
    server = SimpleNamespace(body_min_rate=0, body_timeout=30.0)
    worker: Any = SimpleNamespace(
        connections=[first, broken, last],
        holder=SimpleNamespace(current=SimpleNamespace(server=server)),
        log_event=logged.append,
    )
    sweep(worker, 5.0)
    assert first.fired and last.fired
    assert broken.closing and broken.transport.aborted
    assert logged == ["deadline handling failed (KeyError: 'a bug'); connection aborted"]
