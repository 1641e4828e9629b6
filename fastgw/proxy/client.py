"""An async HTTP/1.1 client over the worker's upstream pools, for handlers (LLM providers, MCP, ...).

``await client.request("openai", "POST", "/v1/chat/completions", headers, body)`` sends one request
through the same :class:`~fastgw.proxy.upstream_call.UpstreamCall` the proxy uses, so a handler's
requests get the upstream's TLS, connect and response timeouts, connection limits and queue, circuit
breaking and health marks, and the sibling-target retry of a failed connect, exactly as proxied ones.
The response's head comes back as :class:`UpstreamResponse`; its body is an async iterator of chunks,
read with backpressure (the upstream read pauses while more than ``BODY_BUFFER`` bytes wait unread).
``close()`` before the end discards the connection (its framing is unknown); after the end the
connection went back to the pool already.

Handlers run in a Task, so waiting here is fine (DESIGN.md: handler kinds). Deadlines: the worker tick
enforces no upstream deadline for these calls, so each wait is bounded here: the head by ``timeout`` (or
the upstream's connect, queue and first-byte timeouts together), each body chunk by the upstream's
``read_timeout``, and everything by ``timeout`` when it is given. A deadline that passes discards the
connection and raises :class:`UpstreamError` (504, ``upstream-timeout``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial
from fastgw.proxy.upstream_call import CallSink, UpstreamCall
from fastgw.proxy.upstream_errors import UpstreamError, mark_not_sent
from fastgw.proxy_headers.request_head import ClientPeer
from fastgw.proxy_headers.response_head import FRAMING_NONE, field_pairs, transfer_encoding_framing
from fastgw.snapshot import UpstreamSettings
from fastgw.upstream.connection import UpstreamConnection
from fastgw.upstream.write_batch import WriteBatch

if TYPE_CHECKING:
    from fastgw.proxy.context import WorkerContext

# Response body bytes held unread before the upstream read pauses: a few socket buffers, so a handler
# that consumes at line rate never stalls the upstream, and one that stops holds little memory.
BODY_BUFFER: Final = 256 * 1024
# Fields the client sets itself (framing and Host) or that are hop-by-hop: dropped from the caller's.
_OWN_FIELDS: Final = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"te"}
)
_NO_PEER: Final = ClientPeer(b"", False, b"http")  # unused: a handler's request has no client to name


class UpstreamResponse(CallSink):
    """One request's response: ``status``, ``headers`` (lower-case names), then the body by iteration."""

    # Slots, as H2Stream: an interpreted subclass of a compiled class (CallSink) keeps its attributes there.
    __slots__ = (
        "_batch",
        "_buffered",
        "_chunks",
        "_closed",
        "_conn",
        "_connected",
        "_deadline",
        "_ended",
        "_error",
        "_head",
        "_loop",
        "_paused",
        "_read_timeout",
        "_reads_end",
        "_wake",
        "call",
        "ex",
        "headers",
        "status",
        "trailers",
    )

    def __init__(self, ex: Exchange, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self.ex = ex
        self.call: UpstreamCall | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.trailers: list[tuple[bytes, bytes]] = []
        self._conn: UpstreamConnection | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._ended = False
        self._closed = False
        self._error: UpstreamError | None = None
        self._deadline = 0.0  # loop time by which everything must be done (0: none)
        self._read_timeout = read_timeout
        self._reads_end = 0.0  # loop time by which the body must have come (0: none; limit_reads)
        self._head = loop.create_future()
        self._connected: asyncio.Future[None] | None = None  # only when the caller bounds the connect
        self._wake: asyncio.Future[bool] | None = None  # its result: whether the wait timed out
        self._loop = loop
        # Set by the client when writes are batched: a wake-up reserves the batch after the Task's step
        # (WriteBatch.reserve), so what the handler writes on waking leaves in the same iteration.
        self._batch: WriteBatch | None = None

    # -- reading, for the handler -------------------------------------------------------------------
    def header(self, name: bytes) -> bytes | None:
        """The first value of field ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def __aiter__(self) -> UpstreamResponse:
        return self

    async def __anext__(self) -> bytes:
        # An iterator class, not an async generator: mypyc compiles this module (fastgw/native.py)
        # and has no async generators.
        chunk = await self._next()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def _next(self) -> bytes:
        """Every body byte that arrived since the last call (one piece, however many reads brought it:
        a handler does one pass per wake-up, not one per read), b"" at the end; raises UpstreamError if
        the upstream fails or stalls. The wait is a future and one timer: ``asyncio.wait_for`` would
        wrap it in more objects, per chunk."""
        chunks = self._chunks
        while not chunks:
            if self._error is not None:
                raise self._error
            if self._ended or self._closed:
                return b""
            # The timer sets a result, not an exception: an exception set on the future is thrown into
            # the awaiting coroutine, and a compiled chain of coroutines above this one (mypyc) did not
            # deliver it to this frame's handler.
            wake = self._wake = self._loop.create_future()
            timer = self._loop.call_later(self._wait_limit(self._read_timeout), _stall, wake)
            try:
                stalled = await wake
            finally:
                timer.cancel()
                self._wake = None
            if stalled:
                self._fail_stalled()
        chunk = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= BODY_BUFFER // 2:
            self._reading(pause=False)
        return chunk

    def set_read_timeout(self, seconds: float) -> None:
        """The longest wait for the next body bytes from now on (a stream's first token, then its idle
        bound: the caller changes it as the answer goes on)."""
        self._read_timeout = seconds

    def limit_reads(self, seconds: float) -> None:
        """The whole rest of the body within ``seconds`` from now, however its bytes trickle: each wait
        is still bounded by the read timeout, and all of them by this (a stream's error body is read
        within its first-token deadline, not a first-token wait per byte). A stall past it is named as
        the read timeout's, not the whole deadline's."""
        self._reads_end = self._loop.time() + seconds

    async def read(self, limit: int = -1) -> bytes:
        """The whole body (for small answers; stream large ones by iterating), or, past ``limit`` bytes
        (when not -1), what arrived so far: longer than ``limit``, which tells the caller. A loop over
        ``_next``, not ``async for``: the iterator's end is a StopAsyncIteration raised per answer."""
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await self._next()
            if not chunk:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            parts.append(chunk)
            size += len(chunk)
            if 0 <= limit < size:
                return b"".join(parts)

    def close(self) -> None:
        """Stop reading: an unfinished response's connection is discarded, a finished one is pooled.
        Not a coroutine: it never waits, and compiled code (mypyc) must not await in a ``finally`` that
        may run with an exception pending (tests/test_native.py)."""
        self._close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._chunks.clear()
        head = self._head
        if head.done() and not head.cancelled():
            head.exception()  # retrieved: an error nobody waits for any more is not "never retrieved"
        call = self.call
        self.call = None  # the call holds this response as its sink: a cycle left to the GC otherwise
        if call is not None and not self._ended:
            call.abandon()
        self._wakeup()

    def _wait_limit(self, limit: float) -> float:
        end = self._deadline
        if self._reads_end and (not end or self._reads_end < end):
            end = self._reads_end
        if end:
            return max(0.0, min(limit, end - self._loop.time()))
        return limit

    def _fail_stalled(self) -> None:
        past = bool(self._deadline) and self._loop.time() >= self._deadline
        waited = "deadline" if past else "read_timeout"
        detail = f"no response bytes within the {waited}"
        self._error = UpstreamError(504, "upstream-timeout", detail, past_deadline=past)
        if self.call is not None:
            self.call.abandon()

    def _wakeup(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(False)
            if self._batch is not None:
                self._batch.reserve()

    def _reading(self, *, pause: bool) -> None:
        conn = self._conn
        self._paused = pause
        if conn is not None and conn.transport is not None and not conn.closed:
            if pause:
                conn.transport.pause_reading()
            else:
                conn.transport.resume_reading()

    # -- CallSink: the upstream call's callbacks ----------------------------------------------------------
    def call_wanted(self) -> bool:
        # Not once the caller was cancelled while waiting for a connection (``_close`` runs only when its
        # Task wakes): a connection handed over later in the same loop iteration is released unused,
        # so a request marked not sent never leaves.
        connected = self._connected
        return not self._closed and (connected is None or not connected.cancelled())

    def call_connection(self, conn: UpstreamConnection | None) -> None:
        self._conn = conn
        if conn is not None:
            self._connected_now()

    def _connected_now(self) -> None:
        connected = self._connected
        if connected is not None and not connected.done():
            connected.set_result(None)

    def call_head(self, status: int, head: bytes, lines: list[bytes]) -> int:
        self.status = status
        self.headers = field_pairs(lines)
        framing = FRAMING_NONE
        for name, value in self.headers:
            if name == b"transfer-encoding":
                framing = transfer_encoding_framing(value)
                break
            if name == b"content-length":
                framing = int(value)
        if not self._head.done():
            self._head.set_result(None)
            if self._batch is not None:
                self._batch.reserve()
        self._connected_now()
        return framing

    def call_body(self, data: bytes) -> None:
        if self._closed:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > BODY_BUFFER and not self._paused:
            self._reading(pause=True)

    def call_trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        self.trailers = fields

    def call_end(self) -> None:
        self._ended = True
        self._conn = None
        self.call = None  # done: dropping it breaks the response <-> call cycle (no GC pass needed)
        self._wakeup()

    def call_error(self, denial: Denial) -> None:
        self._conn = None
        self.call = None  # failed: nothing left to abandon; breaks the response <-> call cycle
        connected = self._connected
        error = UpstreamError(
            denial.status,
            denial.problem,
            self.ex.error_detail or denial.detail,
            connecting=connected is not None and not connected.done(),
        )
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
        self._connected_now()  # the head wait that follows raises the error
        self._wakeup()

    def call_upgrade(self, rest: bytes) -> bool:
        return False

    def flush(self) -> None:
        self._wakeup()

    def pause_client_reading(self) -> None:
        pass  # the request body was written whole: nothing to pause

    def resume_client_reading(self) -> None:
        pass


def _stall(wake: asyncio.Future[bool]) -> None:
    """A body wait's timer: the upstream sent nothing in time (``_next`` then fails the response)."""
    if not wake.done():
        wake.set_result(True)


def _expire(wake: asyncio.Future[None]) -> None:
    """A connect or head wait's timer: the upstream sent nothing in time."""
    if not wake.done():
        wake.set_exception(TimeoutError())


class UpstreamClient:
    """Requests to the worker's upstreams from async code (one per worker; cheap to make)."""

    def __init__(self, worker: WorkerContext) -> None:
        self.worker = worker

    async def request(
        self,
        upstream: str | UpstreamSettings,
        method: bytes | str,
        path: bytes | str,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        *,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        head_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request and return once the response head arrived (raises UpstreamError).

        ``upstream`` is a name from the Snapshot in force, or its settings. ``timeout`` bounds the
        whole exchange, body included; without it, each wait is bounded by the upstream's timeouts.
        ``connect_timeout`` bounds the wait for a connection to carry the request (the pool's own
        connect timeout still applies to each attempt), ``head_timeout`` the wait for the response head,
        ``read_timeout`` each wait for body bytes (in place of the upstream's; see ``set_read_timeout``).
        """
        worker = self.worker
        settings = worker.holder.current.upstreams[upstream] if isinstance(upstream, str) else upstream
        method_b = method.encode() if isinstance(method, str) else method
        path_b = path.encode() if isinstance(path, str) else path
        if not path_b.startswith(b"/") or any(c in path_b for c in b" \r\n"):
            raise ValueError(f"request target must be an origin-form path: {path_b!r}")
        ex = Exchange(method_b, path_b, b"1.1", [])
        ex.body_complete = True
        ex.body_received = ex.content_length = len(body)
        ex.body_buffer = [body] if body else None
        lines = []
        for name, value in headers:
            lower = name.lower()
            if lower in _OWN_FIELDS:
                continue
            if any(c in name + value for c in b"\r\n\0") or b":" in name:
                raise ValueError(f"invalid header field {name!r}")
            lines.append(b"%s: %s\r\n" % (name, value))
        if body or method_b in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"content-length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        loop = worker.loop  # asyncio.get_running_loop() makes a getpid() system call, per request
        response = UpstreamResponse(ex, loop, settings.read_timeout if read_timeout is None else read_timeout)
        if timeout is not None:
            response._deadline = loop.time() + timeout
        if connect_timeout is not None:
            response._connected = loop.create_future()
        # The request leaves with the loop iteration's other writes (upstream/write_batch.py), as a
        # proxied one does: on a virtual machine a lone write to a sleeping upstream costs a VM exit.
        batch = worker.writes if worker.holder.current.server.batch_writes else None
        response._batch = batch
        call = UpstreamCall(worker, ex, worker.pools.group(settings), response, _NO_PEER, worker.via, batch)
        call.client_head = b"".join(lines)
        response.call = call
        call.start()
        head_limit = (
            timeout
            if timeout is not None
            else settings.connect_timeout + settings.queue_timeout + settings.first_byte_timeout
        )
        if head_timeout is not None:
            head_limit = min(head_limit, head_timeout) if timeout is not None else head_timeout
        # Each wait is its future and one timer, as in _next: asyncio.wait_for(shield(...)) made three
        # more futures and callbacks per request. Every setter of these futures checks done() first,
        # so one cancelled with the handler's Task or expired by its timer is never set again.
        connected = response._connected
        if connected is not None and connect_timeout is not None and not connected.done():
            began = loop.time()
            timer = loop.call_later(min(connect_timeout, head_limit), _expire, connected)
            try:
                await connected
            except TimeoutError:
                if connect_timeout <= head_limit:
                    detail = f"no connection within {connect_timeout:g}s"
                    error = UpstreamError(504, "upstream-timeout", detail, connecting=True)
                else:  # the head's own bound ran out first: named as a late head is (the whole deadline?)
                    detail = f"no connection within the {head_limit:g}s the response head had"
                    past = timeout is not None and head_limit >= timeout
                    error = UpstreamError(504, "upstream-timeout", detail, past_deadline=past)
                response._close()
                raise error from None
            except asyncio.CancelledError as cancelled:
                response._close()
                # The cancel cancels the future awaited (and call_wanted then refuses a connection that
                # comes later in this iteration); one that has a result had a connection take the request.
                if connected.cancelled():
                    mark_not_sent(cancelled)
                raise
            finally:
                timer.cancel()
            head_limit = max(0.0, head_limit - (loop.time() - began))
        head = response._head
        timer = loop.call_later(head_limit, _expire, head)
        try:
            await head
        except TimeoutError:
            error = UpstreamError(504, "upstream-timeout", f"no response head within {head_limit:g}s")
            response._close()
            raise error from None
        except asyncio.CancelledError:
            response._close()  # the handler was cancelled (its client left): the connection goes too
            raise
        finally:
            timer.cancel()
        return response
