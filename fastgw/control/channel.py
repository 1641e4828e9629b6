"""The control channel's wire format: length-prefixed orjson frames over a unix stream socket.

Used between the supervisor and the control process (a socketpair) and between the control process and
each worker (one connection per worker to the control socket). A frame is a 4-byte big-endian length and
one message, a JSON object with a ``t`` (type) key (codec/control_messages.py defines them and their
codec). A frame that is not a message (``MessageError``, a ``ChannelError``) drops the connection, with
a line saying why.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, Final, cast

from fastgw.codec.control_messages import ControlMessage, MessageError, decode
from fastgw.codec.control_messages import encode as encode_body
from fastgw.log_line import log_line

# A frame this long is no message we send (the largest, a full identity table or a config, stays far
# below): the length is corrupt or the peer is not ours.
MAX_FRAME: Final = 64 * 1024 * 1024
_LEN: Final = struct.Struct(">I")


class ChannelError(Exception):
    """The peer sent something that is not a frame of a known message: the connection is dropped."""


def encode(message: ControlMessage) -> bytes:
    """One frame: the length, then the message's JSON."""
    body = encode_body(message)
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Bytes in, messages out; keeps a partial frame between feeds."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ControlMessage]:
        buf = self._buffer
        buf += data
        out: list[ControlMessage] = []
        while len(buf) >= 4:
            (length,) = _LEN.unpack_from(buf)
            if length > MAX_FRAME:
                raise ChannelError(f"frame of {length} bytes exceeds {MAX_FRAME}")
            if len(buf) < 4 + length:
                break
            body = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            try:
                out.append(decode(body))
            except MessageError as exc:
                raise ChannelError(str(exc)) from None
        return out


class ChannelProtocol(asyncio.Protocol):
    """One end of a control channel on an event loop: decoded messages go to ``on_message``."""

    def __init__(
        self,
        on_message: Callable[[ChannelProtocol, ControlMessage], None],
        on_lost: Callable[[ChannelProtocol], None],
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None  # what the owner learns about the peer (a worker's slot and pid)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except ChannelError as exc:
            log_line(f"control channel: {exc}; dropping the connection")
            if self.transport is not None:
                self.transport.abort()
            return
        for message in messages:
            self._on_message(self, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._on_lost(self)

    def send(self, message: ControlMessage) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(encode(message))
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class PeerCheckedChannel(ChannelProtocol):
    """A worker connection, accepted only from a process of our own user."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
        except (OSError, AttributeError):
            uid = -1
        if uid != os.getuid():
            sys.stderr.write(f"fastgw[control {os.getpid()}]: refused a control connection from uid {uid}\n")
            if self.transport is not None:
                self.transport.abort()
