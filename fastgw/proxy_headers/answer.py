"""The headers of a response the gateway makes itself rather than relays."""

from __future__ import annotations

from typing import Final

from fastgw.exchange import Exchange
from fastgw.snapshot import Snapshot

# Set by codec/problem.py on every problem response: never repeated from the route's headers.
_PROBLEM_OWN: Final = frozenset(
    {b"content-type", b"content-length", b"cache-control", b"x-content-type-options", b"x-request-id"}
)


def answer_headers(
    ex: Exchange | None, own: tuple[tuple[bytes, bytes], ...], tls: bool, snapshot: Snapshot
) -> tuple[tuple[bytes, bytes], ...]:
    """The extra headers of a response the gateway makes itself (a Denial, an upstream failure, a codec
    error): ``own`` (the Denial's ``WWW-Authenticate``, ``Retry-After``...) plus what a proxied response
    on the same route gets -- its added response headers (security headers), HSTS over TLS, and its
    ``on_response`` hooks (CORS for the request's Origin, RateLimit) -- never repeating a name ``own`` or
    the problem renderer already sets. Outside any route (``ex`` None or unrouted): the global security
    headers and HSTS. The one place for both protocols; a cold path, so it may allocate."""
    route = ex.route if ex is not None else None
    taken = _PROBLEM_OWN | {name for name, _ in own}
    out = list(own)
    if route is not None:
        added, hsts = route.add_response, route.hsts[27:-2]  # the value of "strict-transport-security: ..."
    else:
        added, hsts = snapshot.security_headers, snapshot.hsts
    out.extend(field for field in added if field[0] not in taken)
    if tls and hsts and b"strict-transport-security" not in taken:
        out.append((b"strict-transport-security", hsts))
    if route is not None and ex is not None and route.response_hooks:
        hooked: list[tuple[bytes, bytes]] = []
        for hook in route.response_hooks:
            hook.on_response(ex, hooked)
        out.extend(field for field in hooked if field[0] not in taken)
    return tuple(out)
