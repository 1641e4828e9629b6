"""A webhook receiver on 127.0.0.1 that checks each delivery's HMAC signature, for the tests of
budget alerts: it keeps the JSON bodies whose signature verifies and counts those that do not.
``fail_first`` answers that many deliveries with ``fail_status`` (503: to see the sender retry) first;
``times`` has when each delivery arrived (monotonic); ``port`` 0 picks a free one."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self, secret: bytes, fail_first: int = 0, fail_status: int = 503, port: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.attempts = 0
        self.times: list[float] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                stamp = self.headers.get("x-fastgw-timestamp", "")
                expected = (
                    "sha256="
                    + hmac.new(receiver.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                )
                given = self.headers.get("x-fastgw-signature", "")
                with lock:
                    receiver.attempts += 1
                    receiver.times.append(time.monotonic())
                    failing = receiver.attempts <= receiver.fail_first
                    if not failing:
                        if hmac.compare_digest(expected, given):
                            receiver.received.append(json.loads(body))
                        else:
                            receiver.bad_signatures += 1
                self.send_response(receiver.fail_status if failing else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/budget"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
