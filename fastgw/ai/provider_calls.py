"""Calling a provider through the gateway's pools, for the llm handler and its endpoints: a provider
request sent with a credential (one of the provider's configured keys, the client's own key where the
route allows it, or the stored key when the config has none) under the target's deadlines, and answers
read with a bound."""

from __future__ import annotations

from typing import Final

from fastgw.ai.adapter import ProviderError, ProviderRequest
from fastgw.ai.config import Target, auth_headers
from fastgw.ai.resilience import Deadlines
from fastgw.handler_api import UpstreamReply, Upstreams
from fastgw.proxy.caches import provider_key
from fastgw.proxy.upstream_errors import UpstreamError

# An error body from a provider is read up to this much: enough for any JSON error object; an HTML
# error page beyond it is cut (its text is never shown to clients anyway).
ERROR_BODY_MAX: Final = 64 * 1024
# A whole (non-streamed) answer is read up to this much before it is refused as a provider error:
# the largest completions are a few hundred KiB; 16 MiB bounds the memory one request can take.
RESPONSE_MAX: Final = 16 * 1024 * 1024


async def send_request(
    upstreams: Upstreams,
    target: Target,
    request: ProviderRequest,
    credential: tuple[tuple[bytes, bytes], ...] | None = None,
    deadlines: Deadlines | None = None,
    *,
    stream: bool = False,
) -> UpstreamReply:
    """The provider request through the gateway's pools; unreachable or silent providers as retryable
    ProviderErrors (the problem slug in ``kind``; the address stays in the log, never in the answer).

    ``credential``: the header(s) of the key chosen for this request; None: the provider's first key,
    or its stored one. ``deadlines`` (the target's when None): the connect, then the head within the
    first-token bound for a stream (the total for a whole answer), each body wait within the first-token
    bound until the caller lowers it to the idle one, everything within the total."""
    headers = request.headers
    provider = target.provider
    if credential is None:
        if provider.keys:
            credential = provider.keys[0].headers
        elif provider.stored_key:  # read per request: a set-key applies to the next one, without a reload
            key = provider_key(provider.name)
            if key is not None:
                credential = auth_headers(provider.kind, key.decode(), target.target.options)
    if credential:
        headers = (*credential, *headers)
    limits = target.deadlines if deadlines is None else deadlines
    first = min(limits.first_token, limits.total) if stream else limits.total
    try:
        return await upstreams.request(
            provider.upstream,
            request.method,
            request.path,
            headers,
            request.body,
            timeout=limits.total,
            connect_timeout=limits.connect,
            head_timeout=first,
            read_timeout=first,
        )
    except UpstreamError as exc:
        raise unanswered(exc, limits, stream=stream) from None


def unanswered(exc: UpstreamError, limits: Deadlines, *, stream: bool) -> ProviderError:
    """A call that got no response head, as a retryable ProviderError; a timeout is named by the deadline
    it missed (the access log's ``error``), as the relay names those missed after the head."""
    if exc.status != 504:
        return ProviderError(exc.status, "the provider is unreachable", retryable=True, kind=exc.problem)
    if exc.connecting:  # the connect's own bound (a shorter head or total bound is named as below)
        return missed_deadline("connect_timeout", limits)
    return missed_deadline(head_wait_deadline(exc, limits, stream), limits)


def head_wait_deadline(exc: UpstreamError, limits: Deadlines, stream: bool) -> str:
    """Which deadline a wait before the answer's first byte missed: send_request bounds the head, and an
    error body's reads, by the first-token deadline on a stream (when the shorter) and by the total
    otherwise; a wait the whole deadline cut short is the total's either way."""
    if stream and limits.first_token < limits.total and not exc.past_deadline:
        return "first_token_timeout"
    return "total_timeout"


def missed_deadline(kind: str, limits: Deadlines) -> ProviderError:
    """The 504 of a provider call past one of its deadlines (``kind``: the deadline's key)."""
    if kind == "connect_timeout":
        # The upstream's own connect_timeout may be the shorter bound (docs/ai-gateway.md): no number.
        message = "no connection to the provider in time"
    elif kind == "first_token_timeout":
        message = f"the provider sent no token within {limits.first_token:g}s"
    elif kind == "idle_timeout":
        message = f"the provider sent nothing for {limits.idle:g}s"
    else:
        message = f"the provider's answer exceeded {limits.total:g}s"
    return ProviderError(504, message, retryable=True, kind=kind)


def reply_headers(reply: UpstreamReply) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in reply.headers}


async def read_reply(
    reply: UpstreamReply,
    limit: int,
    *,
    strict: bool = False,
    limits: Deadlines | None = None,
    stream: bool = False,
) -> bytes:
    """The reply's body, at most ``limit`` bytes; with ``strict``, a longer one is a ProviderError.
    ``limits`` and ``stream``: how send_request bounded the reads, so that a stall is named by the
    deadline it missed. An error body of a stream call is read whole within its first-token deadline
    (no token comes on it): send_request bounds each wait by it, and a provider trickling a byte per
    wait would otherwise hold the attempt, and its fallbacks, until the total deadline."""
    if stream and limits is not None and limits.first_token < limits.total:
        reply.limit_reads(limits.first_token)
    try:
        body = await reply.read(limit)
    except UpstreamError as exc:
        if exc.status != 504:
            kind = exc.problem
        else:
            kind = "total_timeout" if limits is None else head_wait_deadline(exc, limits, stream)
        raise ProviderError(exc.status, "the provider stopped answering", retryable=True, kind=kind) from None
    finally:
        reply.close()
    if len(body) > limit:
        if strict:
            message = f"the provider's answer exceeds {limit} bytes"
            raise ProviderError(502, message, kind="response_too_large")
        return body[:limit]
    return body
