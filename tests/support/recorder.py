"""A RequestSink that records events, for feeding codecs bytes and comparing what comes out."""

from __future__ import annotations

from typing import Any

from fastgw.codec.http1 import ParserLimits, RequestReader
from fastgw.codec.http1_backends import make_reader
from fastgw.exchange import Exchange


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.reader: RequestReader | None = None

    def on_request_head(self, ex: Exchange) -> None:
        self.events.append(
            (
                "head",
                ex.method,
                ex.target,
                ex.version,
                tuple(ex.headers),
                ex.host,
                ex.content_length,
                ex.chunked,
                ex.keep_alive,
                ex.expect_continue,
                ex.upgrade,
            )
        )

    def on_request_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def on_request_end(self) -> None:
        self.events.append(("end",))

    def on_upgrade(self, rest: bytes) -> bool:
        self.events.append(("upgrade", rest))
        return True


def reader_for(backend: str, limits: ParserLimits | None = None) -> tuple[Recorder, RequestReader]:
    rec = Recorder()
    reader = make_reader(backend, rec, limits or ParserLimits())
    rec.reader = reader
    return rec, reader
