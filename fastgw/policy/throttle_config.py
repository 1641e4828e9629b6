"""The [auth_throttle] section and its compile: the control-plane half of throttle.py (a compiled hot
module). The settings go in ``ctx.throttle`` for the auth sections compiled after it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fastgw.config.context import CompileContext
from fastgw.config.fields import COUNT_MAX, SECONDS_MAX, WAIT_MAX, Section, doc
from fastgw.policy.throttle import ThrottleSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthThrottleSpec:
    enabled: bool = doc("slow down, then refuse, clients that keep failing authentication", True)
    window: float = doc("seconds over which failures are counted", 60.0, most=SECONDS_MAX)
    slow_after: int = doc(
        "failures in the window after which each failure is answered late", 10, most=COUNT_MAX
    )
    delay: float = doc("seconds a failure answer is held back once slowed", 1.0, most=WAIT_MAX)
    block_after: int = doc(
        "failures in the window after which the client is refused (429)", 50, most=COUNT_MAX
    )
    block_seconds: float = doc(
        "seconds a blocked client address or key prefix stays refused", 300.0, most=SECONDS_MAX
    )


def compile(spec: AuthThrottleSpec, ctx: CompileContext) -> None:
    """[auth_throttle]: the settings every authentication policy compiled after it shares."""
    if not spec.enabled:
        return
    for name in ("window", "slow_after", "block_after", "block_seconds"):
        ctx.positive(f"auth_throttle.{name}", getattr(spec, name))
    if spec.delay < 0:
        raise ctx.error("auth_throttle.delay", "must not be negative")
    if spec.block_after <= spec.slow_after:
        raise ctx.error("auth_throttle.block_after", "must be greater than slow_after")
    settings = ThrottleSettings(
        window=spec.window,
        slow_after=spec.slow_after,
        delay=spec.delay,
        block_after=spec.block_after,
        block_seconds=spec.block_seconds,
    )
    if ctx.failures is not None:
        # A context's own failure table goes with its clock (a test ages blocks without sleeping); the
        # worker's table keeps wall time: its entries outlive this compile and must share one time base.
        settings = dataclasses.replace(settings, failures=ctx.failures, clock=ctx.clock)
    ctx.throttle = settings


# [auth_throttle] in the schema and the reference (policy/registry.py declares it).
SECTION = Section(
    AuthThrottleSpec,
    "[auth_throttle] repeated authentication failures, per worker",
    "always",
    (
        (
            "[auth_throttle]",
            AuthThrottleSpec,
            "Clients that keep failing authentication: slowed, then refused.",
        ),
    ),
)
