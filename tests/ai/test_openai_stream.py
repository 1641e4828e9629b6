"""The openai adapter's stream translator: the provider's SSE stream becomes the same chunks and the same
usage however the bytes are split, and every broken stream is a ProviderError, never a hang or a crash."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.ai.adapter import ProviderError, StreamTranslator, Usage
from fastgw.ai.providers.openai import MAX_STREAM_EVENT, OpenAIAdapter
from tests.support import openai_examples as ex

EXPECTED_USAGE = Usage(
    prompt_tokens=9, completion_tokens=6, cached_tokens=3, reasoning_tokens=2, reported=True
)


def translate(pieces: list[bytes]) -> tuple[list[dict[str, Any]], Usage]:
    stream = OpenAIAdapter().chat_stream()
    chunks: list[dict[str, Any]] = []
    for piece in pieces:
        chunks.extend(stream.feed(piece))
    chunks.extend(stream.end())
    return chunks, stream.usage


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def test_it_is_a_stream_translator() -> None:
    stream: StreamTranslator = OpenAIAdapter().chat_stream()
    assert stream.usage == Usage()


def test_documented_stream_in_one_piece() -> None:
    chunks, usage = translate([ex.sse(ex.STREAM_CHUNKS)])
    assert chunks == ex.STREAM_CHUNKS
    assert usage == EXPECTED_USAGE
    assert usage.pivot() == ex.STREAM_CHUNKS[-1]["usage"]


@given(st.lists(st.integers(min_value=0), max_size=40), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_split_and_line_ending_gives_the_same_chunks_and_usage(cuts: list[int], newline: bytes) -> None:
    wire = ex.sse(ex.STREAM_CHUNKS).replace(b"\n", newline)
    chunks, usage = translate(split(wire, cuts))
    assert chunks == ex.STREAM_CHUNKS
    assert usage == EXPECTED_USAGE


@given(st.lists(st.integers(min_value=0), max_size=20))
def test_tool_call_argument_deltas_survive_any_split(cuts: list[int]) -> None:
    chunks, usage = translate(split(ex.sse(ex.TOOL_STREAM_CHUNKS), cuts))
    assert chunks == ex.TOOL_STREAM_CHUNKS
    arguments = "".join(
        call["function"]["arguments"]
        for chunk in chunks
        for call in chunk["choices"][0]["delta"].get("tool_calls", [])
    )
    assert orjson.loads(arguments) == {"location": "Boston, MA"}
    assert not usage.reported  # the provider sent none: recorded as missing, not as zero


def test_chunks_come_out_as_soon_as_their_event_is_complete() -> None:
    stream = OpenAIAdapter().chat_stream()
    first, second = (ex.sse([c], done=False) for c in ex.STREAM_CHUNKS[:2])
    assert stream.feed(first[:-1]) == []  # the empty line that ends the event is still missing
    assert stream.feed(first[-1:] + second[:10]) == [ex.STREAM_CHUNKS[0]]
    assert stream.feed(second[10:]) == [ex.STREAM_CHUNKS[1]]


def test_comments_and_keepalives_are_ignored() -> None:
    wire = b": keep-alive\n\n" + ex.sse(ex.STREAM_CHUNKS[:2]) + b": OPENROUTER PROCESSING\n\n" + ex.sse([])
    chunks, _ = translate([wire])
    assert chunks == ex.STREAM_CHUNKS[:2]


def test_bytes_after_done_are_ignored() -> None:
    chunks, _ = translate([ex.sse(ex.STREAM_CHUNKS[:1]) + b"data: {broken\n\n"])
    assert chunks == ex.STREAM_CHUNKS[:1]


def test_a_stream_without_done_fails_at_its_end() -> None:
    stream = OpenAIAdapter().chat_stream()
    assert stream.feed(ex.sse(ex.STREAM_CHUNKS, done=False)) == ex.STREAM_CHUNKS
    with pytest.raises(ProviderError, match=r"ended without \[DONE\]") as caught:
        stream.end()
    assert (caught.value.status, caught.value.kind) == (502, "truncated_stream")
    assert stream.usage == EXPECTED_USAGE  # what arrived is still counted


def test_a_stream_cut_mid_event_fails_at_its_end() -> None:
    stream = OpenAIAdapter().chat_stream()
    stream.feed(ex.sse(ex.STREAM_CHUNKS)[:-30])
    with pytest.raises(ProviderError, match=r"without \[DONE\]"):
        stream.end()


def test_an_empty_stream_fails_at_its_end() -> None:
    with pytest.raises(ProviderError):
        translate([b""])


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (b'data: {"id": "chatcmpl-1", "choices": [\n\n', "malformed event"),
        (b"data: [1, 2]\n\n", "not an object"),
        (b"data: \xff\xfe\n\n", "malformed event"),
    ],
)
def test_a_malformed_event_is_a_502(event: bytes, message: str) -> None:
    stream = OpenAIAdapter().chat_stream()
    stream.feed(ex.sse(ex.STREAM_CHUNKS[:1], done=False))
    with pytest.raises(ProviderError, match=message) as caught:
        stream.feed(event)
    assert (caught.value.status, caught.value.retryable) == (502, False)


def test_a_mid_stream_error_event_is_a_502_with_the_provider_message() -> None:
    error = {"error": {"message": "The server had an error while responding", "type": "server_error"}}
    event = b"data: " + orjson.dumps(error) + b"\n\n"
    with pytest.raises(ProviderError, match="The server had an error while responding") as caught:
        translate([ex.sse(ex.STREAM_CHUNKS[:1], done=False), event])
    assert caught.value.status == 502


@pytest.mark.parametrize("piece", [1 << 16, MAX_STREAM_EVENT + 1])
def test_a_10_mib_line_is_cut_off(piece: int) -> None:
    stream = OpenAIAdapter().chat_stream()
    line = b"data: " + b"x" * (10 << 20)
    with pytest.raises(ProviderError, match="over 1048576 bytes") as caught:
        for start in range(0, len(line), piece):
            stream.feed(line[start : start + piece])
    assert caught.value.status == 502
    assert start < 2 * MAX_STREAM_EVENT  # cut off at the bound, not after reading all 10 MiB


def test_a_chunk_with_mistyped_usage_counts_as_missing() -> None:
    chunk = {**ex.STREAM_CHUNKS[-1], "usage": {"prompt_tokens": "nine"}}
    _, usage = translate([ex.sse([chunk])])
    assert not usage.reported
