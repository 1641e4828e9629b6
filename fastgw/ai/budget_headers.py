"""The limit headers of an answer on a route with budgets (ai/budgets.py): OpenAI's ``x-ratelimit-*``
for the tightest request and token limit, and the RateLimit / RateLimit-Policy fields of the IETF
draft, items named by the limit's field (``"tokens_per_minute";r=1200;t=14``).

What a limit's headers say whatever the counts (its cap, its policy item) is rendered once per caller
and limit (``Fixed``); an answer renders only its counts. Written with ``%`` formatting of bytes, ``%d``
of an ``int`` and ``%s`` of ``bytes`` only: on every budgeted answer, and compiled (mypyc 2) each
expression is one allocation (ints written straight as ASCII, pieces joined once), where
``str(n).encode()`` and ``+`` made one per step.
"""

from __future__ import annotations

import math
from typing import Final

PERIOD_SECONDS: Final = {"minute": 60, "day": 86400, "month": 2592000}  # RateLimit-Policy's w (nominal)
_REQUEST_NAMES: Final = (
    b"x-ratelimit-limit-requests",
    b"x-ratelimit-remaining-requests",
    b"x-ratelimit-reset-requests",
)
_TOKEN_NAMES: Final = (
    b"x-ratelimit-limit-tokens",
    b"x-ratelimit-remaining-tokens",
    b"x-ratelimit-reset-tokens",
)

Field = tuple[bytes, bytes]


class Fixed:
    """One limit's headers for one cap: the ``x-ratelimit-limit-*`` field, the RateLimit item up to its
    number, its RateLimit-Policy item (and field, for an answer showing only this limit), and the names
    of the remaining and reset fields."""

    __slots__ = (
        "item",
        "limit_field",
        "policy",
        "policy_field",
        "remaining_name",
        "reset_field",
        "reset_name",
        "reset_t",
        "reset_whole",
    )

    def __init__(self, field: str, tokens: bool, cap: int, period: str) -> None:
        names = _TOKEN_NAMES if tokens else _REQUEST_NAMES
        name = field.encode()
        self.limit_field = (names[0], _digits(cap))
        self.remaining_name = names[1]
        self.reset_name = names[2]
        self.item = b'"' + name + b'";r='
        self.policy = b'"' + name + b'";q=' + _digits(cap) + b";w=" + _digits(PERIOD_SECONDS[period])
        self.policy_field = (b"ratelimit-policy", self.policy)
        # The reset's fields for one whole second (``reset_whole``): a reset of 1 s or more is written
        # from its whole seconds alone, which stay the same for every answer within that second.
        self.reset_whole = 0
        self.reset_field = (self.reset_name, b"")
        self.reset_t = b""

    def reset_item(self, reset: float) -> bytes:
        """The reset as the RateLimit item's ``;t=`` part; ``reset_field`` is then its x-ratelimit-reset
        field (OpenAI's text is the RateLimit ``t`` and an ``s`` under a minute)."""
        whole = math.ceil(reset)
        if whole != self.reset_whole or reset < 1:
            seconds = _digits(whole)
            self.reset_field = (self.reset_name, b"%ss" % seconds if 1 <= reset <= 59 else reset_text(reset))
            self.reset_t = b";t=%s" % seconds
            self.reset_whole = whole if reset >= 1 else 0
        return self.reset_t


def limit_headers(
    requests: Fixed | None,
    requests_left: float,
    requests_reset: float,
    tokens: Fixed | None,
    tokens_left: float,
    tokens_reset: float,
) -> tuple[Field, ...]:
    """The answer's fields for its tightest request limit and token limit (either may be None): each
    limit's three x-ratelimit-* fields, then RateLimit-Policy and RateLimit. Built as tuple displays, one
    allocation each (a list is two: its object and its items), on every budgeted answer."""
    if requests is None or tokens is None:
        shown = tokens if requests is None else requests
        if shown is None:
            return ()
        left, reset = (tokens_left, tokens_reset) if requests is None else (requests_left, requests_reset)
        remaining = _remaining(left)
        t = shown.reset_item(reset)  # before reset_field: it renews the field
        return (
            shown.limit_field,
            (shown.remaining_name, remaining),
            shown.reset_field,
            shown.policy_field,
            (b"ratelimit", b"%s%s%s" % (shown.item, remaining, t)),
        )
    requests_remaining = _remaining(requests_left)
    requests_t = requests.reset_item(requests_reset)
    tokens_remaining = _remaining(tokens_left)
    tokens_t = tokens.reset_item(tokens_reset)
    return (
        requests.limit_field,
        (requests.remaining_name, requests_remaining),
        requests.reset_field,
        tokens.limit_field,
        (tokens.remaining_name, tokens_remaining),
        tokens.reset_field,
        (b"ratelimit-policy", b"%s, %s" % (requests.policy, tokens.policy)),
        (
            b"ratelimit",
            b"%s%s%s, %s%s%s"
            % (requests.item, requests_remaining, requests_t, tokens.item, tokens_remaining, tokens_t),
        ),
    )


def _remaining(left: float) -> bytes:
    return _digits(int(left) if left > 0 else 0)


def reset_text(seconds: float) -> bytes:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``1h2m3s``, ``250ms``."""
    if seconds < 1:
        return _digits(max(0, math.ceil(seconds * 1000))) + b"ms"
    whole = math.ceil(seconds)
    if whole < 60:
        return _digits(whole) + b"s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = _digits(minutes) + b"m" + _digits(secs) + b"s"
    return _digits(hours) + b"h" + text if hours else text


def _digits(number: int) -> bytes:
    return b"%d" % number


def refusal_text(budget: str, field: str, kind: str, cap: int, used: float, amount: int) -> tuple[str, str]:
    """A budget's refusal as the client's SDK shows it: (message, code), worded as OpenAI's own (a
    spend budget's ``insufficient_quota``, a token or request limit's ``rate_limit_exceeded``); spend in
    micro-USD."""
    what = field.replace("_", " ")
    if kind == "usd":
        return (
            f"Budget {budget!r} exhausted: {what} {cap / 1_000_000:g}, spent {used / 1_000_000:.4f}. "
            "You exceeded your current quota.",
            "insufficient_quota",
        )
    unit = "tokens" if kind == "tokens" else "requests"
    return (
        f"Rate limit reached for {what} (budget {budget!r}): limit {cap}, used {math.floor(used)},"
        f" requested {amount} {unit}.",
        "rate_limit_exceeded",
    )
