"""The policy seam: what a policy is, what it may return, and the loop that runs a chain.

A policy is compiled from config once (control plane) and then only has its sync hooks called:

* ``check(ex) -> None | Denial | Pending``: ``None`` passes; a ``Denial`` ends the chain (unless the policy
  is in shadow mode, then the would-denial is recorded on the Exchange and the chain goes on); a
  ``Pending`` is returned only on a cold cache miss and parks this one request until its awaitable
  finishes, after which the chain resumes at the next policy.
* ``on_response(ex, headers)`` (optional): appends response header pairs; hooks run in reverse order.
* ``on_complete(ex)`` (optional): runs exactly once per exchange that passed ``check``, after the last byte
  or an abort.

Phases are static and ordered in code (DESIGN.md): config cannot reorder them. Denials are values, never
exceptions (STYLE.md 5).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Protocol

from fastgw.exchange import Exchange


class Phase(IntEnum):
    CONNECTION = 10
    PREFLIGHT = 20
    AUTHENTICATION = 30
    AUTHORIZATION = 40
    RATE_LIMIT = 50
    BODY = 55  # opt-in: check_body(ex, body) once the request body is buffered (handler routes)
    TRANSFORM = 60


@dataclass(frozen=True, slots=True)
class Denial:
    """An expected refusal, rendered as problem+json by ``codec/problem.py``.

    ``reason`` is a short stable code (``network.deny``) for logs and metrics; ``headers`` are extra
    response headers (``WWW-Authenticate``, ``Retry-After``, ``Allow``).
    """

    status: int
    problem: str
    detail: str
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


class Pending:
    """A check that must wait for I/O (cold cache miss). Its awaitable yields ``None`` or a ``Denial``."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Denial | None]) -> None:
        self.awaitable = awaitable


class Policy(Protocol):
    PHASE: ClassVar[Phase]
    name: str
    shadow: bool

    def check(self, ex: Exchange) -> Denial | Pending | None: ...


class ResponseHook(Protocol):
    def on_response(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> None: ...


class BodyCheck(Protocol):
    """A policy of Phase.BODY: sees the whole request body (bounded by the route's max_body_bytes) after
    the chain passed and before the handler runs. Sync, like ``check``; shadow mode applies."""

    name: str
    shadow: bool

    def check_body(self, ex: Exchange, body: bytes) -> Denial | None: ...


def run_body_checks(checks: Sequence[BodyCheck], ex: Exchange, body: bytes) -> Denial | None:
    """The BODY phase: the first Denial of a non-shadow check, or None."""
    for check in checks:
        denial = check.check_body(ex, body)
        if denial is None:
            continue
        if check.shadow:
            if ex.shadow is None:
                ex.shadow = []
            ex.shadow.append(denial.reason)
            continue
        return denial
    return None


class CompleteHook(Protocol):
    def on_complete(self, ex: Exchange) -> None: ...


def run_chain(chain: Sequence[Policy], ex: Exchange, start: int = 0) -> tuple[int, Denial | Pending | None]:
    """Run ``chain[start:]`` on ``ex``.

    Returns ``(index, outcome)``: the index of the policy that stopped the chain and its Denial or
    Pending, or ``(len(chain), None)`` when every policy passed. Resume a Pending at ``index + 1``.
    """
    for index in range(start, len(chain)):
        policy = chain[index]
        outcome = policy.check(ex)
        if outcome is None:
            continue
        if isinstance(outcome, Denial) and policy.shadow:
            if ex.shadow is None:
                ex.shadow = []
            ex.shadow.append(outcome.reason)
            continue
        return index, outcome
    return len(chain), None


def resolve_pending(policy: Policy, ex: Exchange, outcome: Denial | None) -> Denial | None:
    """Apply shadow mode to the result of a Pending, as ``run_chain`` does for a sync Denial."""
    if outcome is not None and policy.shadow:
        if ex.shadow is None:
            ex.shadow = []
        ex.shadow.append(outcome.reason)
        return None
    return outcome
