"""The loop that runs a route's policy chain (what a policy is and may return: ``fastgw/verdict.py``).

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

from collections.abc import Sequence

from fastgw import verdict
from fastgw.exchange import Exchange
from fastgw.verdict import CompleteHook, Denial, Pending, Phase, ResponseHook

__all__ = [
    "BodyCheck",
    "CompleteHook",
    "Denial",
    "Pending",
    "Phase",
    "Policy",
    "ResponseHook",
    "resolve_pending",
    "run_body_checks",
    "run_chain",
]

Policy = verdict.Policy[Exchange]  # a policy of this gateway's Exchange (verdict.py says why generic)
BodyCheck = verdict.BodyCheck[Exchange]  # a Phase.BODY policy of this gateway's Exchange


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
