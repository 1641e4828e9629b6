"""What the key service accepts: its error type and the checks of request fields (names, lists of
strings, durations), so every operation refuses bad input with the same precise 422."""

from __future__ import annotations

import math
import time
from typing import Any, Final

# The longest lifetime, grace period or expiry distance a request may ask for. A key meant to last forever
# says so by having no expiry; beyond ~100 years a number is a mistake (and far enough out, time.gmtime,
# which renders the ISO times of lists, overflows).
MAX_SECONDS: Final = 100 * 365 * 86400.0


class KeyServiceError(Exception):
    """A request the store cannot honour (unknown consumer or key, duplicate name, a state that changed
    under it): 404/409/422."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and text(v) for v in value):
        raise KeyServiceError(422, f"{what} must be a list of non-empty strings without NUL")
    return tuple(value)


def text(value: str) -> bool:
    """Non-empty and NUL-free: no store column can hold NUL (PostgreSQL's text refuses it)."""
    return bool(value) and "\0" not in value


def seconds(value: Any, what: str, *, zero: bool) -> float:
    """A finite number of seconds, > 0 (or >= 0 where ``zero``), at most MAX_SECONDS."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
        or value > MAX_SECONDS
    ):
        low = ">= 0" if zero else "> 0"
        raise KeyServiceError(422, f"{what} must be a number of seconds {low} and <= {MAX_SECONDS:.0f}")
    return float(value)


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def consumer_fields(body: dict[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """A new consumer's name, team, metadata (with its limits and models folded in) and limits."""
    name = body.get("name")
    if not isinstance(name, str) or not text(name) or len(name) > 200:
        raise KeyServiceError(422, "name must be a non-empty string without NUL (at most 200 characters)")
    team = body.get("team", "")
    if not isinstance(team, str) or "\0" in team:
        raise KeyServiceError(422, "team must be a string without NUL")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise KeyServiceError(422, "metadata must be an object")
    limits = body.get("limits", {})
    if not isinstance(limits, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
        for k, v in limits.items()
    ):
        raise KeyServiceError(422, "limits must map limit names to positive integers")
    if limits:
        metadata = {**metadata, "limits": limits}  # per-consumer overrides of routes' limits
    models = body.get("models")  # the llm models its keys may use (globs); absent: every model
    if models is not None:
        metadata = {**metadata, "models": list(strings(models, "models"))}
    return name, team, metadata, limits


def expiry_target(body: dict[str, Any], now: float) -> tuple[float, bool]:
    """``expire``'s request: the new expiry (``at`` unix time or ``in`` seconds from now, a time in the
    past meaning now) and whether it may move later (``extend``)."""
    extend = body.get("extend", False)
    if not isinstance(extend, bool):
        raise KeyServiceError(422, "extend must be true or false")
    if "at" in body and "in" in body:
        raise KeyServiceError(422, "give at or in, not both")
    if "at" in body:
        at = body["at"]
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
            raise KeyServiceError(422, "at must be a unix time in seconds")
        if at > now + MAX_SECONDS:
            raise KeyServiceError(422, f"at must be at most {MAX_SECONDS:.0f} seconds from now")
        return max(float(at), now), extend
    return now + seconds(body.get("in", 0), "in", zero=True), extend
