"""One request/response pair: what the client sent, what policies learned, what the log records.

An Exchange is created by a codec when a request head is complete, read by the router and the policy
chain, and, once its response ends, *is* the access-log record: ``complete`` stamps ``ended`` and
``total_s`` and queues it for the tick (no per-request copy into a record tuple). ``__slots__`` keeps it at
one allocation per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastgw.route import Route


class Exchange:
    __slots__ = (
        "answer_headers",
        "attempts",
        "auth",
        "body_buffer",
        "body_complete",
        "body_received",
        "bytes_out",
        "chain_index",
        "chunked",
        "client_cert",
        "client_ip",
        "conn_tokens",
        "consumer",
        "content_length",
        "denial",
        "ended",
        "error_detail",
        "expect_continue",
        "headers",
        "host",
        "keep_alive",
        "limit_state",
        "llm",
        "method",
        "passed",
        "path",
        "query",
        "request_id",
        "response_started",
        "route",
        "shadow",
        "snapshot_id",
        "stalled_side",
        "start",
        "status",
        "target",
        "total_s",
        "traceparent",
        "upgrade",
        "upstream_addr",
        "upstream_ms",
        "upstream_start",
        "version",
        "xff",
        "xrid",
    )

    def __init__(
        self, method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        # Header names are lower-cased once by the codec; values are the raw bytes received.
        self.headers = headers
        self.host = b""
        self.path = b""
        self.query = b""
        self.content_length = -1  # -1: no Content-Length header
        self.chunked = False
        self.keep_alive = True
        self.expect_continue = False
        self.upgrade = b""
        self.conn_tokens: tuple[bytes, ...] = ()
        self.xff = b""
        self.xrid = b""
        self.traceparent = b""
        self.client_ip = ""
        self.client_cert: Any = None  # tls.server.PeerCertificate of a verified client certificate
        self.request_id = b""
        self.route: Route | None = None
        self.consumer: Any = None
        self.auth = ""  # on a route with several auth schemes: the one(s) that verified it, for the log
        self.limit_state: Any = None  # what rate limits saw, for their response headers
        # Fields a handler's own limits add to its answer, whichever code path answers (the LLM budgets'
        # x-ratelimit-* and RateLimit: ai/budgets.py); proxy/handler_links.py's route_fields appends them.
        self.answer_headers: tuple[tuple[bytes, bytes], ...] | None = None
        self.llm: Any = None  # on an llm route: model, provider, tokens, timings (fastgw/ai/record.py)
        self.denial = ""  # reason code of the denial that ended the chain, for the log
        # Why an upstream failed, with its address and OS error: for the log only, never for the client.
        self.error_detail = ""
        self.stalled_side = ""  # "client" or "upstream": whose silence ended the exchange (408 / 504)
        self.attempts = 0  # upstream targets tried (connect failures move to a sibling target)
        self.shadow: list[str] | None = None  # would-denials of shadow-mode policies
        self.body_buffer: list[bytes] | None = None
        self.body_complete = False
        self.body_received = 0
        self.bytes_out = 0
        self.status = 0
        self.start = 0.0
        self.upstream_start = 0.0
        self.upstream_ms = -1.0
        self.upstream_addr = b""
        self.response_started = False
        self.chain_index = 0  # the policy a Pending came from, for resume_chain
        self.passed = False  # the chain passed: on_complete hooks are owed exactly once
        self.snapshot_id = b""
        self.ended = 0.0  # wall-clock time the exchange completed (set by dispatch.complete)
        self.total_s = 0.0  # seconds from its head to its completion

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0

    def header(self, name: bytes) -> bytes | None:
        """First value of a (lower-case) header name; a linear scan, meant for cold paths and tests."""
        for key, value in self.headers:
            if key == name:
                return value
        return None
