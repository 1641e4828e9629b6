"""The supervisor's end of its socketpair to the control process.

Non-blocking in the supervisor's ``selectors`` loop: frames the socket cannot take yet wait in a buffer
(write interest is on only while it holds some), and a closed or garbled channel detaches the link (the
control process is restarted and a new socketpair made at its fork). While detached, messages to the
control process are dropped: what it needs again it learns at its restart.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from typing import Final

from fastgw.codec import control_messages as msg
from fastgw.control.channel import ChannelError, FrameDecoder, encode
from fastgw.process.log import log

READ_SIZE: Final = 1 << 20  # bytes read per readable event; a reload order carries a whole config


class SupervisorLink:
    def __init__(
        self, selector: selectors.BaseSelector, on_message: Callable[[msg.ControlMessage], None]
    ) -> None:
        self._selector = selector
        self._on_message = on_message
        self.sock: socket.socket | None = None
        self._decoder = FrameDecoder()
        self._out = bytearray()

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def attach(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._selector.register(sock, selectors.EVENT_READ, self._on_ready)

    def detach(self) -> None:
        if self.sock is None:
            return
        self._selector.unregister(self.sock)
        self.sock.close()
        self.sock = None

    def send(self, message: msg.ControlMessage) -> None:
        if self.sock is None:
            return
        self._out += encode(message)
        self._flush()

    def _flush(self) -> None:
        assert self.sock is not None
        try:
            while self._out:
                sent = self.sock.send(self._out)
                del self._out[:sent]
        except BlockingIOError:
            pass
        except OSError:
            self._out.clear()
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        self._selector.modify(self.sock, events, self._on_ready)

    def _on_ready(self) -> None:
        if self.sock is None:  # detached earlier in the same select round (the control process died)
            return
        if self._out:
            self._flush()
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.detach()
            return
        try:
            messages = self._decoder.feed(data)
        except ChannelError as exc:
            log("supervisor", f"control channel: {exc}")
            self.detach()
            return
        for message in messages:
            self._on_message(message)
