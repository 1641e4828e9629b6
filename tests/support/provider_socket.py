"""Sends a provider adapter's ``ProviderRequest`` to a fake provider over a real socket (TLS optional), as
the llm handler will, and hands each body piece to a callback the moment it arrives, so stream
translators are fed exactly what the network delivers."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

from fastgw.ai.adapter import ProviderRequest


@dataclass
class ProviderAnswer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # the whole message arrived (False: the provider hung up mid-answer)


class _Reader:
    def __init__(self, answer: ProviderAnswer, on_body: Callable[[bytes], None] | None) -> None:
        self.answer = answer
        self.deliver = on_body
        self.name = ""
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answer.headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.answer.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.deliver is not None:
            self.deliver(body)
        else:
            self.answer.body += body

    def on_message_complete(self) -> None:
        self.answer.complete = True


def send(
    port: int,
    request: ProviderRequest,
    *,
    ssl_context: ssl.SSLContext | None = None,
    on_body: Callable[[bytes], None] | None = None,
    timeout: float = 5.0,
) -> ProviderAnswer:
    """One request on a fresh connection; raises TimeoutError if the provider goes quiet for ``timeout``."""
    head = [f"{request.method} {request.path} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    head += [f"{name.decode()}: {value.decode()}" for name, value in request.headers]
    head += [f"content-length: {len(request.body)}", "connection: close", "", ""]
    answer = ProviderAnswer()
    reader = _Reader(answer, on_body)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock = ssl_context.wrap_socket(raw, server_hostname="localhost") if ssl_context is not None else raw
    except BaseException:
        raw.close()  # a refused handshake must not leave the socket to the GC (a ResourceWarning later)
        raise
    with sock:
        sock.sendall("\r\n".join(head).encode() + request.body)
        while not answer.complete:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                break
            try:
                reader.parser.feed_data(data)
            except httptools.HttpParserCallbackError as exc:  # the callback's own error, unwrapped
                raise (exc.__context__ or exc) from None
    return answer
