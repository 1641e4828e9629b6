"""A provider's 2xx answer relayed to the client in its own format: whole (chat, embeddings), or streamed
event by event with no buffering of the answer, under the target's stream deadlines.

A stream's first token must come within ``first_token_timeout`` of the request (counted across reads, so
a provider that trickles bytes without a token still runs out); before it, a timeout is a ProviderError
the target loop may retry elsewhere, since the client has nothing yet. After it, each wait for more is
bounded by ``idle_timeout`` and the whole call by ``total_timeout``; a failure then ends the stream with
an error event in the client's format (its SDK raises), after the chunks completed before the failure.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from fastgw.ai.adapter import Adapter, Json, ProviderError
from fastgw.ai.client_format import ClientFormat, StreamEncoder
from fastgw.ai.config import Target
from fastgw.ai.provider_calls import RESPONSE_MAX, missed_deadline, read_reply
from fastgw.ai.record import LlmRecord
from fastgw.handler_api import CANCELLED_CLIENT_GONE, CANCELLED_SHUTDOWN, ResponseWriter, UpstreamReply
from fastgw.proxy.upstream_errors import UpstreamError

SSE_HEAD: Final = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
)
JSON: Final = (b"content-type", b"application/json")


def status_kind(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")


def target_field(record: LlmRecord) -> tuple[bytes, bytes]:
    return (
        b"x-fastgw-llm-target",
        f"{record.provider}/{record.provider_model}; attempts={record.attempts}".encode(),
    )


async def send_whole(out: ResponseWriter, record: LlmRecord, body: bytes) -> None:
    out.start(200, (JSON, target_field(record), (b"content-length", b"%d" % len(body))))
    await out.write(body)
    await out.end()


async def relay_chat(
    reply: UpstreamReply, adapter: Adapter, out: ResponseWriter, fmt: ClientFormat, record: LlmRecord
) -> None:
    body = await read_reply(reply, RESPONSE_MAX, strict=True)
    answer, usage = adapter.chat_response(body)
    answer["model"] = record.model
    record.usage = usage
    check_usage(record, len(body))
    await send_whole(out, record, fmt.render_response(answer))


async def relay_embeddings(
    reply: UpstreamReply,
    adapter: Adapter,
    out: ResponseWriter,
    fmt: ClientFormat,
    record: LlmRecord,
    pivot: Json,
) -> None:
    answer, usage = adapter.embeddings_response(await read_reply(reply, RESPONSE_MAX, strict=True))
    answer["model"] = record.model
    record.usage = usage
    await send_whole(out, record, fmt.render_embeddings(answer, pivot))


def _timeout_error(exc: UpstreamError, target: Target, began: float, got_token: bool) -> ProviderError:
    """A provider that went silent or hung up, named by the deadline it missed."""
    if exc.status != 504:
        return ProviderError(exc.status, "the provider stopped answering", retryable=True, kind=exc.problem)
    limits = target.deadlines
    if exc.past_deadline or time.monotonic() - began >= limits.total:
        return missed_deadline("total_timeout", limits)
    return missed_deadline("idle_timeout" if got_token else "first_token_timeout", limits)


async def relay_stream(
    reply: UpstreamReply,
    adapter: Adapter,
    target: Target,
    out: ResponseWriter,
    fmt: ClientFormat,
    record: LlmRecord,
    pivot: Json,
    started: float,
    began: float,
) -> None:
    """``started``: when the request reached the handler (time to first token); ``began``: when this
    attempt sent its request (its deadlines)."""
    translator = adapter.chat_stream()
    encoder = fmt.stream_encoder(pivot)
    limits = target.deadlines
    first_token_at = began + min(limits.first_token, limits.total)
    chunks: list[Json] = []
    received = 0
    tail: list[Json] = []
    # A failure is kept and answered after the try statement, not in its except block: compiled by
    # mypyc, a coroutine suspended inside an except block leaks its exception to every other Task.
    failure: UpstreamError | ProviderError | None = None
    token_out = False  # a chunk with content (not only the role) went out, and was flushed
    try:
        async for read in reply:
            received += len(read)
            rest = read
            while rest:
                piece, rest = rest, b""
                if not token_out:
                    # Until the first token is out, a read is fed one event at a time: a provider's
                    # burst read at once would otherwise hold the first token back until every event
                    # in it is translated (the time to first token is the stream's latency).
                    end = first_event_end(piece)
                    if 0 < end < len(piece):
                        piece, rest = piece[:end], piece[end:]
                try:
                    chunks = translator.feed(piece)
                except ProviderError as broken:
                    chunks = broken.completed  # the events this read completed before the broken one
                    raise
                if not chunks:
                    if not out.started:  # still no token: the rest of the first-token bound
                        reply.set_read_timeout(max(0.0, first_token_at - time.monotonic()))
                    continue
                if not out.started:
                    _first_token(out, record, started)
                    reply.set_read_timeout(limits.idle)
                await out.write(_encode(chunks, encoder, record))
                if not token_out:
                    # Each chunk up to the first token leaves now (a role-only chunk comes first from
                    # most providers), not after the rest of a burst read with it: the reply hands
                    # over a read's HTTP chunks one by one without suspending this Task.
                    out.flush()
                    token_out = carries_token(chunks)
                chunks = []
        tail = translator.end()
    except (UpstreamError, ProviderError) as failed:
        failure = failed
    except asyncio.CancelledError as cancelled:
        # The client left, or the stopping worker cut the stream (handler_api.py): said in the record,
        # so the access log and the metrics do not count the stream as answered whole. (Nothing awaited
        # here: see above.)
        if not record.error:
            record.error = cancel_kind(cancelled)
        raise
    finally:
        # Whatever ends the stream (a client gone mid-read cancels this Task), the usage the provider
        # reported so far is the exchange's: it billed the tokens whether or not the client stayed.
        record.usage = translator.usage
        check_usage(record, received)
        reply.close()  # never suspends (it only gives the connection back)
    if failure is not None:
        # A provider that hangs up or stalls mid-stream is a failure like a malformed event: once the
        # client has bytes, it gets an error event (its SDK raises), never a stream cut short in silence.
        error: ProviderError
        if isinstance(failure, ProviderError):
            error = failure
        else:
            error = _timeout_error(failure, target, began, out.started)
        if chunks and not out.started:
            _first_token(out, record, started)
        if out.started:
            pieces = _encode(chunks, encoder, record) if chunks else b""
            await out.write(pieces + encoder.error(error.status, error.message, status_kind(error.status)))
            await out.end()
        raise error
    if not out.started:
        out.start(200, (*SSE_HEAD, target_field(record)))
    await out.write(_encode(tail, encoder, record) + encoder.finish())
    await out.end()


def provider_may_bill(record: LlmRecord, started: bool, status: int) -> bool:
    """Whether a provider may bill for an exchange that reported no usage, so that a budget keeps its
    estimate: the answer began to reach the client (always a 200), or the exchange ended while the last
    call may have run: cut while it was out (sent or being sent), or failed after it was sent (a timeout
    waiting for the answer, a 2xx answer that could not be used: ai/attempts.py keeps ``at_provider``).
    A refusal by status, a connect failure, a cut between attempts (a retry's backoff) or before any call
    used nothing billable."""
    return (started and status == 200) or (record.at_provider and bool(record.error))


def cancel_kind(cancelled: asyncio.CancelledError) -> str:
    """The record's error kind for a handler Task cancelled mid-answer: its cancellation's message."""
    if cancelled.args and cancelled.args[0] == CANCELLED_SHUTDOWN:
        return CANCELLED_SHUTDOWN
    return CANCELLED_CLIENT_GONE


def carries_token(chunks: list[Json]) -> bool:
    """Whether a chunk delta says more than the role: content, a tool call, reasoning."""
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and any(value for key, value in delta.items() if key != "role"):
                return True
    return False


def first_event_end(data: bytes) -> int:
    """Where the first server-sent event in ``data`` ends (past the blank line that ends it, LF or CRLF
    lines), or 0 when no event ends in it."""
    lf = data.find(b"\n\n")
    crlf = data.find(b"\r\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 4
    return lf + 2 if lf >= 0 else 0


def _first_token(out: ResponseWriter, record: LlmRecord, started: float) -> None:
    """The stream's head, sent with its first content: the time to first token is taken here."""
    out.start(200, (*SSE_HEAD, target_field(record)))
    record.ttft_ms = (time.monotonic() - started) * 1000.0


def check_usage(record: LlmRecord, received: int) -> None:
    """A provider reporting more answer tokens (reasoning aside: those are never sent) than the bytes of
    its answer is not believed silently: every token it sent is at least one byte. The count stands (the
    ledger and budgets keep what the provider bills) and the record is marked for the operator."""
    usage = record.usage
    if usage.reported and usage.completion_tokens - usage.reasoning_tokens > received:
        record.usage_exceeds_answer = True


def _encode(chunks: list[Json], encoder: StreamEncoder, record: LlmRecord) -> bytes:
    pieces = []
    for chunk in chunks:
        chunk["model"] = record.model  # the public name the client asked for, not the provider's
        pieces.append(encoder.encode(chunk))
    return b"".join(pieces)
