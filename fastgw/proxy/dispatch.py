"""What every client protocol does with a request once its head is parsed, written once.

The HTTP/1.1 connection (``proxy/http1.py``) and the HTTP/2 connection (``proxy/http2.py``) differ in
framing only. Routing, the policy chain (and its resumption when a policy waited on I/O: :func:`park`),
the upstream request head and the access-log record come from here, so a route, a policy or a limit
behaves exactly the same whichever protocol the client spoke.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Final, Protocol

from fastgw.codec.problem import CodecError
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Pending, resolve_pending, run_chain
from fastgw.proxy_headers.request_head import ClientPeer, build_request_head
from fastgw.snapshot import Route, Snapshot, UpstreamSettings

if TYPE_CHECKING:
    from fastgw.proxy.context import WorkerContext
    from fastgw.upstream.pool import TargetPool, UpstreamGroup

# Final: compiled, a C static (not a module-dict lookup per call)
_monotonic: Final = time.monotonic
_time: Final = time.time

IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
# ord("?"). Tested as an int, membership in bytes is one memchr (~100 instructions by callgrind);
# ``bytes.find`` is a method call with argument parsing (~1,000), and ``b"?" in target`` first tries the
# int conversion of b"?" and raises and clears a TypeError (~2,100).
QUERY_MARK: Final = 0x3F
# A body this small, fully received, is kept for a transparent retry: large enough for typical JSON
# requests, small enough that keeping a copy per request in flight costs little memory.
RETRY_BODY_MAX: Final = 65536
# The answer to a request whose policy raised while it waited (a defect: a policy's refusals are
# denials): the client is answered, never left waiting.
POLICY_ERROR: Final = Denial(500, "internal-error", "the request could not be completed", "policy.error")


def admit(worker: WorkerContext, ex: Exchange) -> Denial | Pending | None:
    """Normalise the path, route, check the declared body size and run the policy chain.

    Returns None when the request may be forwarded (``ex.route`` is set and ``ex.passed`` is True), a
    Denial to answer, or a Pending to hand to :func:`park`. ``ex.chain_index``
    tells the resumption which policy was waiting.
    """
    snapshot: Snapshot = worker.holder.current
    ex.snapshot_id = snapshot.id_bytes
    ex.request_id = worker.ids.request_id(ex.xrid)
    target = ex.target
    if QUERY_MARK in target:  # see QUERY_MARK
        q = target.find(b"?")
        ex.query = target[q + 1 :]
        target = target[:q]
    try:
        ex.path, found = snapshot.router.resolve(ex.host, target, ex.method)
    except CodecError as err:
        ex.path = target
        return Denial(err.status, err.problem, err.detail, "codec." + err.problem)
    if type(found) is Denial:
        return found
    route: Route = found  # type: ignore[assignment]
    ex.route = route
    if ex.content_length > route.max_body_bytes:
        return Denial(
            413, "content-too-large", f"request body exceeds {route.max_body_bytes} bytes", "body.too_large"
        )
    if route.chain:
        index, outcome = run_chain(route.chain, ex)
        if outcome is not None:
            if type(outcome) is Pending:
                ex.chain_index = index
            return outcome
    ex.passed = True
    return None


async def resume_chain(ex: Exchange, pending: Pending) -> Denial | None:
    """Wait for a policy's I/O (cold path, in a Task), then run the rest of the chain."""
    route = ex.route
    assert route is not None
    i = ex.chain_index
    awaitable: Awaitable[Denial | None] = pending.awaitable
    while True:
        result = resolve_pending(route.chain[i], ex, await awaitable)
        if result is not None:
            return result
        i, outcome = run_chain(route.chain, ex, i + 1)
        if outcome is None:
            ex.passed = True
            return None
        if type(outcome) is Denial:
            return outcome
        awaitable = outcome.awaitable  # type: ignore[union-attr]


class Parked(Protocol):
    """The client side of an exchange whose policy waited on I/O: the HTTP/1 connection or an HTTP/2
    stream. Called once per parked exchange, from its Task (never on the fast path)."""

    def still_waiting(self, ex: Exchange) -> bool:
        """Whether the client still waits for ``ex`` (it may have gone, or reset the stream)."""

    def deny(self, ex: Exchange, denial: Denial) -> None: ...
    def run_handler(self, ex: Exchange) -> None: ...
    def hold_body(self, ex: Exchange) -> None: ...
    def forward(self, ex: Exchange) -> None: ...
    def resumed(self) -> None:
        """After any of the four above: send what it made ready."""


def park(worker: WorkerContext, ex: Exchange, pending: Pending, side: Parked) -> None:
    """A policy needs I/O (a cold cache miss): wait for it in a Task, run the rest of the chain, then do
    with ``ex`` what :func:`admit`'s caller does: deny it, run its handler, hold its body for the BODY
    phase, or forward it. Body bytes arriving meanwhile wait in ``ex.body_buffer``."""
    if ex.body_buffer is None:
        ex.body_buffer = []
    worker.spawn(_resume(worker, ex, pending, side))


async def _resume(worker: WorkerContext, ex: Exchange, pending: Pending, side: Parked) -> None:
    failed = ""
    try:
        denial = await resume_chain(ex, pending)
    except Exception as exc:  # a policy's own failures are denials: this is a defect, answered anyway
        failed = type(exc).__name__
        denial = POLICY_ERROR
    if failed:  # (logged after the try statement: compiled, nothing happens inside an except block)
        ex.error_detail = failed
        route_name = ex.route.name if ex.route is not None else "-"
        worker.log_event(
            f"a policy of route {route_name} failed on request {ex.request_id.decode('latin-1')}: {failed}"
        )
    if not side.still_waiting(ex):
        release(ex)  # the client left while the policy waited (its record is written)
        return
    route = ex.route
    assert route is not None
    if denial is not None:
        side.deny(ex, denial)
    elif route.handler is not None:
        side.run_handler(ex)
    elif route.body_checks:
        side.hold_body(ex)
    else:
        side.forward(ex)
    side.resumed()


def upstream_request(
    worker: WorkerContext, ex: Exchange, pool: TargetPool, peer: ClientPeer, via: bytes
) -> list[bytes]:
    """The HTTP/1.1 request head for the upstream, as pieces to join; ``peer`` is the client connection's
    (HTTP/1.1 or HTTP/2), ``via`` names the protocol the client spoke (RFC 9110 7.6.3)."""
    route = ex.route
    assert route is not None
    path = ex.path
    if route.strip_prefix:
        path = path[len(route.strip_prefix) :] or b"/"
        if path[:1] != b"/":
            path = b"/" + path
    if ex.query:
        path = path + b"?" + ex.query
    ex.upstream_addr = label = pool.label_bytes
    return build_request_head(
        ex,
        route,
        path,
        ex.host if route.preserve_host and ex.host else label,
        peer,
        via,
        worker.ids.traceparent(ex.traceparent),
    )


def retry_allowed(ex: Exchange, settings: UpstreamSettings) -> bool:
    """Whether a request whose whole payload was kept may be sent once more on a fresh connection (a reused
    connection died before answering): idempotent, small, not an upgrade, and the upstream allows it."""
    return (
        ex.method in IDEMPOTENT and settings.retry and not ex.upgrade and ex.body_received <= RETRY_BODY_MAX
    )


# What a client is told when an upstream fails: the problem type says what happened, the request id ties
# it to the access log, whose ``error`` field has the target's address and the OS error. Addresses,
# ports and error strings of the internal network never reach the client.
_UPSTREAM_DETAIL: Final = {
    "upstream-unavailable": "the upstream service could not be reached",
    "upstream-timeout": "the upstream service did not answer in time",
    "upstream-busy": "the upstream service has no free connection; try again later",
    "upstream-closed": "the upstream service closed the connection before answering",
    "upstream-tls": "the upstream service's TLS certificate could not be verified",
    "bad-upstream-response": "the upstream service sent an invalid response",
}


def upstream_denial(ex: Exchange, status: int, problem: str, detail: str) -> Denial:
    """The answer for an upstream failure: ``detail`` (internal) goes to the log, a generic one to the
    client. A 504 is the upstream's stall, so the log names it as the side that stalled."""
    ex.error_detail = detail
    if status == 504:
        ex.stalled_side = "upstream"
    public = _UPSTREAM_DETAIL.get(problem, "the upstream service failed")
    return Denial(status, problem, public, "upstream." + problem)


def connect_retry_target(group: UpstreamGroup, ex: Exchange, status: int, problem: str) -> TargetPool | None:
    """Another target of the exchange's upstream to try after a failed connect, or None.

    A connect that failed (refused, unreachable, timed out) sent nothing, so the request may go to a
    sibling target whatever its method. Targets are tried in order after the failed one, each at most once
    per request (``ex.attempts``), skipping those ejected or marked down, within the upstream's retry
    budget. A full pool (503) or a TLS verification failure (the same everywhere) is not retried.
    """
    if status == 503 or problem == "upstream-tls":
        return None
    pools = group.pools
    ex.attempts = max(ex.attempts, 1)
    if ex.attempts >= len(pools):
        return None
    failed = next((i for i, p in enumerate(pools) if p.label_bytes == ex.upstream_addr), -1)
    now = _monotonic()
    for step in range(1, len(pools)):
        pool = pools[(failed + step) % len(pools)]
        if pool.label_bytes != ex.upstream_addr and pool.available(now):
            if not group.allow_retry():
                return None
            ex.attempts += 1
            return pool
    return None


def retarget(
    worker: WorkerContext, ex: Exchange, payload: bytes, pool: TargetPool, peer: ClientPeer, via: bytes
) -> bytes:
    """``payload`` (a request head and the body bytes behind it) with the head rebuilt for ``pool``'s
    target (its Host and the upstream address in the log)."""
    body_at = payload.find(b"\r\n\r\n") + 4  # the head ends at its first empty line
    return b"".join(upstream_request(worker, ex, pool, peer, via)) + payload[body_at:]


def release(ex: Exchange) -> None:
    """Run the on_complete hooks of an exchange that passed the chain, exactly once."""
    if ex.passed:
        ex.passed = False
        route = ex.route
        if route is not None and route.complete_hooks:
            for hook in route.complete_hooks:
                hook.on_complete(ex)


def complete_when_done(worker: WorkerContext, ex: Exchange, task: asyncio.Task[None] | None) -> None:
    """``complete``, once the handler Task just cancelled (proxy/handler.py's cancel) has run its
    cancellation: its except and finally clauses write the record's reason, usage, cost and duration
    one loop step later, and a tick in between would deliver the record without them (a cut stream as
    served whole, its tokens unpriced)."""
    if task is None:
        complete(worker, ex)
        return
    worker.cut[task] = ex
    task.add_done_callback(lambda done: complete_cut(worker, done))


def complete_cut(worker: WorkerContext, task: asyncio.Task[None]) -> None:
    """Complete the exchange a cut handler Task held, once (its end, or a stopping worker that could not
    wait for it: process/worker.py)."""
    ex = worker.cut.pop(task, None)
    if ex is not None:
        complete(worker, ex)


def complete(worker: WorkerContext, ex: Exchange) -> None:
    """Run on_complete hooks (once) and hand the exchange to the access log and metrics as its record."""
    release(ex)
    ex.ended = _time()
    ex.total_s = _monotonic() - ex.start
    worker.record(ex)
