"""Calling a provider through the gateway's pools, for the llm handler and its endpoints: a provider
request sent (with the stored key when the provider's config has none), and answers read with a bound."""

from __future__ import annotations

from typing import Final

from fastgw.ai.adapter import ProviderError, ProviderRequest
from fastgw.ai.config import Target, auth_headers
from fastgw.handler_api import UpstreamReply, Upstreams
from fastgw.proxy.caches import provider_key
from fastgw.proxy.client import UpstreamError

# An error body from a provider is read up to this much: enough for any JSON error object; an HTML
# error page beyond it is cut (its text is never shown to clients anyway).
ERROR_BODY_MAX: Final = 64 * 1024
# A whole (non-streamed) answer is read up to this much before it is refused as a provider error:
# the largest completions are a few hundred KiB; 16 MiB bounds the memory one request can take.
RESPONSE_MAX: Final = 16 * 1024 * 1024


async def send_request(upstreams: Upstreams, target: Target, request: ProviderRequest) -> UpstreamReply:
    """The provider request through the gateway's pools; unreachable or silent providers as retryable
    ProviderErrors (the problem slug in ``kind``; the address stays in the log, never in the answer)."""
    headers = request.headers
    provider = target.provider
    if provider.stored_key:  # read per request: a set-key applies to the next one, without a reload
        key = provider_key(provider.name)
        if key is not None:
            headers = (*auth_headers(provider.kind, key.decode(), target.target.options), *headers)
    try:
        return await upstreams.request(provider.upstream, request.method, request.path, headers, request.body)
    except UpstreamError as exc:
        message = (
            "the provider did not answer in time" if exc.status == 504 else "the provider is unreachable"
        )
        raise ProviderError(exc.status, message, retryable=True, kind=exc.problem) from None


def reply_headers(reply: UpstreamReply) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in reply.headers}


async def read_reply(reply: UpstreamReply, limit: int, *, strict: bool = False) -> bytes:
    """The reply's body, at most ``limit`` bytes; with ``strict``, a longer one is a ProviderError."""
    parts: list[bytes] = []
    size = 0
    try:
        async for data in reply:
            size += len(data)
            if size > limit:
                if strict:
                    raise ProviderError(
                        502, f"the provider's answer exceeds {limit} bytes", kind="response_too_large"
                    )
                break
            parts.append(data)
    except UpstreamError as exc:
        raise ProviderError(
            exc.status, "the provider stopped answering", retryable=True, kind=exc.problem
        ) from None
    finally:
        await reply.close()
    return b"".join(parts)
