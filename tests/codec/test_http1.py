"""Both HTTP/1 backends, fed bytes, must produce the same events and refuse the same inputs."""

from __future__ import annotations

import gc

import pytest

from fastgw.codec.http1 import ParserLimits
from fastgw.codec.problem import CodecError
from tests.support.malformed_requests import REFUSED
from tests.support.recorder import reader_for


def _feed(backend: str, data: bytes, limits: ParserLimits | None = None) -> list[tuple[object, ...]]:
    rec, reader = reader_for(backend, limits)
    reader.feed(data)
    return rec.events


@pytest.mark.parametrize(("name", "raw", "status"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_by_both_backends(
    http1_backend: str, name: str, raw: bytes, status: int | tuple[int, ...]
) -> None:
    with pytest.raises(CodecError) as info:
        _feed(http1_backend, raw)
    allowed = status if isinstance(status, tuple) else (status,)
    assert info.value.status in allowed, info.value.detail


@pytest.mark.parametrize(("name", "raw", "status"), REFUSED, ids=[c[0] for c in REFUSED])
def test_backends_agree_on_refusal_status(name: str, raw: bytes, status: object) -> None:
    statuses = []
    for backend in ("httptools", "h11"):
        with pytest.raises(CodecError) as info:
            _feed(backend, raw)
        statuses.append(info.value.status)
    assert statuses[0] == statuses[1] or isinstance(status, tuple), statuses


def test_simple_get(http1_backend: str) -> None:
    events = _feed(http1_backend, b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com:8080\r\nX-Y: z\r\n\r\n")
    head = events[0]
    assert head[1:4] == (b"GET", b"/a?b=1", b"1.1")
    assert head[4] == ((b"host", b"Example.com:8080"), (b"x-y", b"z"))
    assert head[5] == b"Example.com:8080"
    assert head[8] is True  # keep-alive by default on 1.1
    assert events[-1] == ("end",)


def test_content_length_body(http1_backend: str) -> None:
    events = _feed(http1_backend, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    assert events[0][6] == 5
    assert ("body", b"hello") in events
    assert events[-1] == ("end",)


def test_chunked_body_decoded(http1_backend: str) -> None:
    raw = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    )
    events = _feed(http1_backend, raw)
    assert events[0][7] is True
    assert ("body", b"abcde") in events
    assert events[-1] == ("end",)


def test_pipelined_requests_in_one_read(http1_backend: str) -> None:
    one = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
    two = b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
    events = _feed(http1_backend, one + two + b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
    targets = [e[2] for e in events if e[0] == "head"]
    assert targets == [b"/1", b"/2", b"/3"]
    assert events.count(("end",)) == 3


def test_http10_keep_alive_rules(http1_backend: str) -> None:
    assert _feed(http1_backend, b"GET / HTTP/1.0\r\n\r\n")[0][8] is False
    assert _feed(http1_backend, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0][8] is True
    assert _feed(http1_backend, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")[0][8] is False


CONNECTION_FIELDS = (
    b"",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: Keep-Alive, Upgrade\r\n",
    b"Connection: x-custom\r\n",
)


@pytest.mark.parametrize("connection", CONNECTION_FIELDS)
@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_version_is_the_request_lines_with_any_connection_field(
    http1_backend: str, version: bytes, connection: bytes
) -> None:
    # The httptools reader reads the version from keep-alive state when no Connection field is present.
    head = _feed(http1_backend, b"GET / HTTP/" + version + b"\r\nHost: a\r\n" + connection + b"\r\n")[0]
    assert head[3] == version
    keep = b"close" not in connection if version == b"1.1" else b"keep-alive" in connection.lower()
    assert head[8] is keep


@pytest.mark.parametrize("connection", CONNECTION_FIELDS)
@pytest.mark.parametrize("version", [b"0.9", b"2.0", b"1.2"])
def test_other_versions_are_refused_with_any_connection_field(
    http1_backend: str, version: bytes, connection: bytes
) -> None:
    with pytest.raises(CodecError) as info:
        _feed(http1_backend, b"GET / HTTP/" + version + b"\r\nHost: a\r\n" + connection + b"\r\n")
    assert info.value.status in (400, 505)


def test_absolute_form_uses_authority(http1_backend: str) -> None:
    events = _feed(http1_backend, b"GET http://a/x?q HTTP/1.1\r\nHost: a\r\n\r\n")
    assert events[0][2] == b"/x?q"
    assert events[0][5] == b"a"


def test_expect_continue_flag(http1_backend: str) -> None:
    events = _feed(
        http1_backend, b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    )
    assert events[0][9] is True


def test_websocket_upgrade_reports_rest(http1_backend: str) -> None:
    raw = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nFRAME"
    events = _feed(http1_backend, raw)
    assert events[0][10] == b"websocket"
    assert events[-1] == ("upgrade", b"FRAME")


def test_header_section_limit_is_431(http1_backend: str) -> None:
    limits = ParserLimits(max_header_bytes=1024)
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    with pytest.raises(CodecError) as info:
        _feed(http1_backend, raw, limits)
    assert info.value.status == 431


def test_trickled_giant_header_is_431_before_it_ends(http1_backend: str) -> None:
    limits = ParserLimits(max_header_bytes=1024)
    _rec, reader = reader_for(http1_backend, limits)
    reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
    with pytest.raises(CodecError) as info:
        for _ in range(100):
            reader.feed(b"a" * 100)
    assert info.value.status == 431


def test_header_count_limit(http1_backend: str) -> None:
    limits = ParserLimits(max_header_count=10)
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(20)) + b"\r\n"
    with pytest.raises(CodecError) as info:
        _feed(http1_backend, raw, limits)
    assert info.value.status == 431


def test_long_target_is_414(http1_backend: str) -> None:
    limits = ParserLimits(max_target_bytes=100)
    with pytest.raises(CodecError) as info:
        _feed(http1_backend, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n", limits)
    assert info.value.status == 414


def test_trailing_whitespace_is_not_part_of_a_value(http1_backend: str) -> None:
    # Found by hypothesis: llhttp kept the trailing space, h11 did not.
    events = _feed(http1_backend, b"POST / HTTP/1.1\r\nHost: a \r\nContent-Length: 3 \r\nX: v\t\r\n\r\nabc")
    head = events[0]
    assert head[4] == ((b"host", b"a"), (b"content-length", b"3"), (b"x", b"v"))
    assert head[6] == 3


def test_a_closed_reader_leaves_no_garbage_for_the_cyclic_gc(http1_backend: str) -> None:
    # A closed connection must be freed by reference counting: the cyclic GC's full collections over
    # dead connections paused a worker for milliseconds (the new-connection bench's p99).
    gc.collect()
    gc.disable()
    try:
        # The Recorder holds its reader and is its sink, like the client connection: a cycle until closed.
        rec, reader = reader_for(http1_backend)
        reader.feed(b"GET /a HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        assert [e[2] for e in rec.events if e[0] == "head"] == [b"/a", b"/b"]
        reader.close()
        del rec, reader
        assert gc.collect() == 0
    finally:
        gc.enable()
