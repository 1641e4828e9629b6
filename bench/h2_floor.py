"""The HTTP/2 floor: a bare uvloop + h2 server answering every request with a fixed 100-byte response.

No upstream, no routing, no policies, no logging: it shows, in the same run as fastgw and nginx, what the
pure-Python HTTP/2 stack (h2, hpack, hyperframe) costs by itself, so the HTTP/2 bar is judged against it
(as the HTTP/1.1 bar is judged against bench/bare_proxy.py). It uses h2 the fastest way we know (bytes
headers, no outbound validation: a server builds its response headers itself), as fastgw does. Inbound
validation stays on (h2's default): it is protocol work every server must do, and fastgw does it too,
with its own faster code (codec/h2_request.py).

    python bench/h2_floor.py LISTEN_PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, RequestReceived

BODY = b"x" * 100
HEADERS = [
    (b":status", b"200"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"%d" % len(BODY)),
]


class Floor(asyncio.Protocol):
    def __init__(self) -> None:
        self.conn = H2Connection(
            H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        for event in conn.receive_data(data):
            if type(event) is RequestReceived:
                conn.send_headers(event.stream_id, HEADERS)
                conn.send_data(event.stream_id, BODY, end_stream=True)
            elif type(event) is ConnectionTerminated and self.transport is not None:
                self.transport.close()
        out = conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Floor, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
