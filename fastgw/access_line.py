"""The access log's line: one JSON object per completed exchange, built from a bytes template.

Compiled with mypyc (fastgw/native.py): the tick formats every record of the worker here, and compiled
code reads the compiled Exchange's fields directly and builds the line without parsing a format string
(every field is bytes, numbers included: see decimal() and millis3(), so the template is a typed ``%``
that mypyc turns into one bytes build).
The writer thread and its queue stay in sinks/access_log.py.
"""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import unquote_to_bytes

import orjson

from fastgw.exchange import Exchange

_MILLIS: Final = tuple(b"%03dZ" % ms for ms in range(1000))
_THOUSANDTHS: Final = tuple(b"%03d" % n for n in range(1000))
_DECIMALS: Final = tuple(b"%d" % n for n in range(1000))


def decimal(n: int) -> bytes:
    """``b"%d" % n``, from a table below 1,000 (status codes, most byte counts and milliseconds): a typed
    ``%d`` converts through a temporary str, ~170 instructions a field by callgrind."""
    return _DECIMALS[n] if 0 <= n < 1000 else b"%d" % n


def millis3(value: float) -> tuple[bytes, bytes]:
    """``%.3f`` of a latency in milliseconds as its whole and thousandths parts, in integer arithmetic
    (a float conversion costs ten times a table lookup), rounding half up at the microsecond. Returned as a
    pair for the line template: mypyc returns it unboxed, so no intermediate bytes is built.
    -1 (no upstream) is the only negative value, and takes the float path."""
    if value < 0:
        whole, _, thousandths = (b"%.3f" % value).partition(b".")
        return whole, thousandths
    micros = int(value * 1000.0 + 0.5)
    return decimal(micros // 1000), _THOUSANDTHS[micros % 1000]


def _json_bytes(value: bytes) -> bytes:
    """A JSON string for client-controlled bytes: quoted as is when nothing needs escaping."""
    if b'"' in value or b"\\" in value or not value.isascii():
        return orjson.dumps(value.decode("latin-1"))
    return b'"' + value + b'"'


def redact_query(query: bytes, names: frozenset[bytes]) -> bytes:
    """The query with the values of ``names`` replaced by REDACTED.

    Names are compared percent-decoded and lower-cased, so ``API%5FKey=...`` is caught like ``api_key``.
    Cookies and Authorization are never logged at all (no header is), so only the query needs this.
    """
    if not names:
        return query
    parts = query.split(b"&")
    for i, part in enumerate(parts):
        name, eq, _value = part.partition(b"=")
        if eq and unquote_to_bytes(name.replace(b"+", b" ")).lower() in names:
            parts[i] = name + b"=REDACTED"
    return b"&".join(parts)


def format_batch(
    records: list[Exchange], include_query: bool, redact: frozenset[bytes] = frozenset()
) -> bytes:
    """JSON lines for a batch of records, ~1 us per record (a dict + orjson costs ~4 us).

    Only the path and query come from the client unvalidated (llhttp admits ``"`` and ``\\`` in targets),
    so only they go through escaping; method and request id are validated tokens, the rest is ours.
    Field order is fixed; ``query`` appears only when configured, ``denial`` and ``shadow`` when set
    (a denial with ``stalled_side`` when a deadline ended it, and ``error`` with an upstream failure's
    address and reason, which the client never sees),
    ``protocol`` on HTTP/2 requests, ``auth`` on routes that accept several auth schemes, ``consumer``
    (the caller's consumer name: an API key's consumer, a token's subject) when the route authenticated
    one; it may come from a token's claims, so it is escaped (once per name and batch).
    """
    dumps = orjson.dumps
    millis = _MILLIS
    names: dict[str, bytes] = {}  # route name -> its JSON form
    paths: dict[bytes, bytes] = {}  # a batch repeats its paths: escape each once (~0.5 us saved a record)
    clients: dict[str, bytes] = {}
    consumers: dict[str, bytes] = {}  # consumer name -> its ',"consumer":...' part
    lines: list[bytes] = []
    last_second = -1
    prefix = b""
    for r in records:
        stamp = r.ended
        second = int(stamp)
        if second != last_second:
            last_second = second
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)).encode()
        name = r.route.name if r.route is not None else ""
        route = names.get(name)
        if route is None:
            route = names[name] = dumps(name)
        raw_path = r.path or r.target
        path = paths.get(raw_path)
        if path is None:
            path = paths[raw_path] = _json_bytes(raw_path)
        client = clients.get(r.client_ip)
        if client is None:
            client = clients[r.client_ip] = r.client_ip.encode()
        tail = b""
        if (
            r.denial
            or r.error_detail
            or r.shadow is not None
            or r.client_cert is not None
            or (include_query and r.query)
            or (r.version == b"2")
            or r.attempts > 1
            or r.auth
            or r.consumer is not None
            or r.llm is not None
        ):
            if include_query and r.query:
                tail += b',"query":' + _json_bytes(redact_query(r.query, redact))
            if r.denial:
                tail += b',"denial":' + dumps(r.denial)
                if r.stalled_side:
                    tail += b',"stalled_side":' + dumps(r.stalled_side)
            if r.error_detail:  # a denial's, or what a handler answered without saying (prompt APIs)
                tail += b',"error":' + dumps(r.error_detail)
            if r.shadow is not None:
                tail += b',"shadow":' + dumps(r.shadow)
            cert = r.client_cert
            if cert is not None:
                tail += b',"client_cert":' + dumps(
                    {"subject": cert.subject, "sans": cert.sans, "sha256": cert.sha256}
                )
            if r.version == b"2":
                tail += b',"protocol":"HTTP/2"'  # HTTP/1.x lines stay as they were
            if r.attempts > 1:
                tail += b',"attempts":' + decimal(r.attempts)  # targets tried (connect failures)
            if r.auth:
                tail += b',"auth":"' + r.auth.encode() + b'"'  # scheme names: ours, no escaping needed
            identity = r.consumer
            if identity is not None:
                who: str = identity.consumer  # every identity has its consumer's name (policy/rbac.py)
                part = consumers.get(who)
                if part is None:
                    part = consumers[who] = b',"consumer":' + dumps(who)
                tail += part
            if r.llm is not None:
                tail += b',"llm":' + r.llm.log_json()  # model, provider, tokens, timings (ai/record.py)
        upstream_whole, upstream_thousandths = millis3(r.upstream_ms)
        total_whole, total_thousandths = millis3(r.total_s * 1000.0)
        lines.append(
            b'{"time":"%s%s","snapshot":"%s","request_id":"%s","client":"%s","method":"%s","path":%s,'
            b'"route":%s,"status":%s,"upstream":"%s","upstream_ms":%s.%s,"total_ms":%s.%s,"bytes_in":%s,'
            b'"bytes_out":%s%s}'
            % (
                prefix,
                millis[int((stamp - second) * 1000)],
                r.snapshot_id,
                r.request_id,
                client,
                r.method,
                path,
                route,
                decimal(r.status),
                r.upstream_addr,
                upstream_whole,
                upstream_thousandths,
                total_whole,
                total_thousandths,
                decimal(r.body_received),
                decimal(r.bytes_out),
                tail,
            )
        )
    lines.append(b"")
    return b"\n".join(lines)
