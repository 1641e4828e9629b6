"""What a policy is and what it may answer: the contract between policies, routes and connections.

Kept apart from the Exchange and the chain loop (``policy/chain.py``) so that a compiled ``Route``
(``route.py``), the router and the connections can name these types without importing the policy layer:
the protocols are generic over the exchange type, which is how a Route can hold policies that read
Exchanges while the Exchange points at its Route, with no import cycle (tests/test_layering.py).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Protocol, TypeVar

ExchangeT_contra = TypeVar("ExchangeT_contra", contravariant=True)


class Phase(IntEnum):
    CONNECTION = 10
    PREFLIGHT = 20
    AUTHENTICATION = 30
    AUTHORIZATION = 40
    RATE_LIMIT = 50
    BODY = 55  # opt-in: check_body(ex, body) once the request body is buffered
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


class Policy(Protocol[ExchangeT_contra]):
    PHASE: ClassVar[Phase]
    name: str
    shadow: bool

    def check(self, ex: ExchangeT_contra) -> Denial | Pending | None: ...


class ResponseHook(Protocol[ExchangeT_contra]):
    def on_response(self, ex: ExchangeT_contra, headers: list[tuple[bytes, bytes]]) -> None: ...


class CompleteHook(Protocol[ExchangeT_contra]):
    def on_complete(self, ex: ExchangeT_contra) -> None: ...


class BodyCheck(Protocol[ExchangeT_contra]):
    """A policy of Phase.BODY: sees the whole request body (bounded by the route's max_body_bytes) after
    the chain passed and before the handler runs or the body is forwarded. Sync, like ``check``; shadow
    mode applies."""

    name: str
    shadow: bool

    def check_body(self, ex: ExchangeT_contra, body: bytes) -> Denial | None: ...
