"""Every gateway-generated response is rendered here, as ``application/problem+json`` (RFC 9457).

Policies return ``Denial`` values and codecs raise ``CodecError``; the proxy's connections turn both into
bytes by calling :func:`render_problem`, and the admin API renders its errors with :func:`problem_fields`.
Keeping one renderer means every 4xx/5xx the gateway itself produces has the same shape, the same
security headers and the same request id, whichever layer decided it.
"""

from __future__ import annotations

from typing import Final

import orjson

from fastgw.codec.serialize import DATE, REASONS, status_line

PROBLEM_BASE: Final = "https://fastgw.dev/problems/"


class CodecError(Exception):
    """A request or response that cannot be parsed or framed safely.

    ``status`` is the hint for the response to a client (400, 413, 414, 431, 501, 505) or, for an upstream
    response, the reason it becomes a 502. After a CodecError the framing of the stream is lost, so the
    connection is always closed (RFC 9112 11.2: never guess at message boundaries).
    """

    def __init__(self, status: int, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.problem = problem
        self.detail = detail


def problem_fields(
    status: int,
    problem: str,
    detail: str,
    request_id: bytes = b"",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    own: tuple[bytes, bytes] | None = None,
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The header fields (no status, no Date, no framing) and body of a problem response; the HTTP/1.1
    and HTTP/2 connections frame them their own way. ``own`` (content type, body) replaces the problem
    document where the route's clients parse another error shape (an llm route: OpenAI's or Anthropic's
    error object, ``Route.error_body``)."""
    if status == 204:  # an answer with no content (a CORS preflight), not a problem
        fields = [(b"cache-control", b"no-store")]
        body = b""
    elif own is not None:
        body = own[1]
        fields = [
            (b"content-type", own[0]),
            (b"content-length", b"%d" % len(body)),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
        ]
    else:
        title = REASONS.get(status, "Error")
        doc: dict[str, object] = {
            "type": PROBLEM_BASE + problem,
            "title": title,
            "status": status,
            "detail": detail,
        }
        if request_id:
            doc["request_id"] = request_id.decode("latin-1")
        body = orjson.dumps(doc)
        fields = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", b"%d" % len(body)),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
        ]
    if request_id:
        fields.append((b"x-request-id", request_id))
    fields.extend(headers)
    return fields, body


def render_problem(
    status: int,
    problem: str,
    detail: str,
    *,
    request_id: bytes = b"",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    close: bool = False,
    http10: bool = False,
    own: tuple[bytes, bytes] | None = None,
) -> bytes:
    """Serialise a complete problem+json response (head and body) ready for ``transport.write``.

    ``problem`` is the last segment of the problem type URI; ``headers`` are extra header pairs such as
    ``WWW-Authenticate``, ``Retry-After`` or ``Allow``. With ``close`` the response says
    ``Connection: close``; the caller closes after writing.
    """
    fields, body = problem_fields(status, problem, detail, request_id, headers, own)
    parts = [status_line(status), DATE.value]
    for name, value in fields:
        parts.append(name + b": " + value + b"\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    elif http10:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)
