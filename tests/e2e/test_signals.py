"""Signals on a real gateway process: SIGHUP reload (an invalid file changes nothing), SIGTERM drain."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

from tests.support.clients import ResponseReader, connect, get
from tests.support.gateways import Gateway, basic_config
from tests.support.upstreams import TestUpstream
from tests.support.waiting import wait_until


def test_sighup_reload_swaps_routes(gateway_factory: Callable[..., Gateway], upstream: TestUpstream) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    first = get(gw.port, "/x")
    assert first.status == 200
    old_id = gw.wait_log(1)[0]["snapshot"]
    text = gw.config.read_text().replace('path = "/"', 'path = "/only"')
    gw.config.write_text(text)
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload (SIGHUP) complete" in gw.stderr(), 5, "the reload log line")
    assert get(gw.port, "/x").status == 404
    assert get(gw.port, "/only/y").status == 200
    records = gw.wait_log(3)
    assert records[-1]["snapshot"] != old_id


def test_invalid_reload_keeps_running_config(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    gw.config.write_text(gw.config.read_text().replace('auth = "none"', 'auth = "nope"'))
    gw.proc.send_signal(signal.SIGHUP)
    line = wait_until(
        lambda: [ln for ln in gw.stderr().splitlines() if "reload failed" in ln], 5, "reload error"
    )[0]
    assert f"{gw.config}: routes[0].auth: invalid value 'nope'" in line
    assert get(gw.port, "/still").status == 200


def test_sigterm_drains_in_flight_request(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    upstream.delay = 0.5
    gw = gateway_factory(basic_config(upstream.port))
    result: dict[str, int] = {}

    def slow() -> None:
        with connect(gw.port) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            resp = ResponseReader(sock).read()
            result["status"] = resp.status
            result["close"] = int(resp.header(b"connection") == b"close")

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: upstream.requests, 5, "the request to reach the upstream")
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    t.join(5)
    assert result == {"status": 200, "close": 1}
    assert gw.proc.wait(5) == 0
    assert time.monotonic() - started < 3


def test_a_request_still_unanswered_at_drain_timeout_gets_a_503_not_a_reset(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """The stopping worker closes what is left at drain_timeout: an exchange whose response has not begun
    is answered 503 shutting-down first (a client may retry it elsewhere), and logged as the stop's."""
    upstream.delay = 10.0
    gw = gateway_factory(basic_config(upstream.port, server="drain_timeout = 0.5"))
    result: dict[str, object] = {}

    def slow() -> None:
        with connect(gw.port) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            resp = ResponseReader(sock).read()
            result["status"] = resp.status
            result["type"] = resp.header(b"content-type")
            result["body"] = resp.body

    t = threading.Thread(target=slow)
    t.start()
    wait_until(lambda: upstream.requests, 5, "the request to reach the upstream")
    gw.proc.send_signal(signal.SIGTERM)
    t.join(5)
    assert (result["status"], result["type"]) == (503, b"application/problem+json"), result
    assert b"shutting-down" in result["body"]  # type: ignore[operator]
    assert gw.proc.wait(5) == 0
    [record] = gw.log_records()
    assert (record["status"], record["denial"]) == (503, "worker.shutdown")


def test_sigusr1_reopens_the_access_log(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    gw = gateway_factory(basic_config(upstream.port))
    assert get(gw.port, "/before").status == 200
    gw.wait_log(1)
    rotated = gw.access_log.with_suffix(".1")
    gw.access_log.rename(rotated)  # what logrotate does before signalling
    gw.proc.send_signal(signal.SIGUSR1)
    # The reopen is queued behind any pending batch; poll until the new file receives a record.
    wait_for_record(gw, "/after", "a record in the reopened log")
    assert b"/before" in rotated.read_bytes()
    assert b"/before" not in gw.access_log.read_bytes()


def test_a_reopen_that_fails_is_logged_and_logging_resumes_once_the_file_can_be_opened(
    gateway_factory: Callable[..., Gateway], upstream: TestUpstream
) -> None:
    """logrotate moved the log, and its path cannot be opened when SIGUSR1 comes (here a directory
    stands there): the writer thread died on the error and the worker never logged again. Now the
    failure is one line, requests are served, and the next batch after the path is usable is written."""
    gw = gateway_factory(basic_config(upstream.port))
    assert get(gw.port, "/before").status == 200
    gw.wait_log(1)
    gw.access_log.rename(gw.access_log.with_suffix(".1"))
    gw.access_log.mkdir()
    gw.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: "cannot open" in gw.stderr(), 5, "the failed reopen logged")
    assert get(gw.port, "/during").status == 200
    gw.access_log.rmdir()
    wait_for_record(gw, "/after", "a record in the log once it can be opened")
    assert "writing again" in gw.stderr()


def wait_for_record(gw: Gateway, path: str, what: str) -> None:
    """Requests to ``path`` until the access log file (at its configured path) has one's record."""
    wait_until(
        lambda: (
            get(gw.port, path).status == 200
            and gw.access_log.is_file()
            and path.encode() in gw.access_log.read_bytes()
        ),
        5,
        what,
    )
