"""codec/sse.py against the WHATWG HTML standard, "9.2.6 Interpreting an event stream".

Unit tests name the rule they check; the property tests compare the incremental parser, fed any stream
split into any chunks, with ``reference_parse``: a per-character transcription of the standard's
algorithm, written for clarity, not speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.codec.problem import CodecError
from fastgw.codec.sse import (
    DEFAULT_MAX_EVENT_SIZE,
    Event,
    SseError,
    SseParser,
    encode_comment,
    encode_event,
)

# --- the reference: the standard's algorithm, one character at a time ---------------------------------


@dataclass
class Reference:
    events: list[Event] = field(default_factory=list)
    truncated: bool = False
    last_event_id: str = ""
    retry: int | None = None
    longest_line: int = 0  # in characters (bytes for an ASCII stream)
    largest_data_buffer: int = 0
    peak: int = 0  # the most the incomplete line plus the data buffer ever held


def reference_parse(stream: bytes) -> Reference:
    """Decode (UTF-8 decode: one leading BOM dropped, errors replaced), then run the standard's loop."""
    text = stream.decode("utf-8-sig", "replace")
    out = Reference()
    data = ""
    event_type = ""
    id_buffer = ""
    retry_in_block: int | None = None
    fields_seen = False
    line = ""
    after_cr = False

    def process(line: str) -> None:
        nonlocal data, event_type, id_buffer, retry_in_block, fields_seen
        out.longest_line = max(out.longest_line, len(line))
        if line == "":  # "If the line is empty (a blank line): Dispatch the event"
            out.last_event_id = id_buffer  # dispatch step 1
            if data:  # step 2: an empty data buffer dispatches nothing
                if data.endswith("\n"):  # step 3
                    data = data[:-1]
                out.events.append(Event(data, event_type or "message", out.last_event_id, retry_in_block))
            data = ""
            event_type = ""
            retry_in_block = None
            fields_seen = False
            return
        if line.startswith(":"):  # "If the line starts with a U+003A COLON character: Ignore the line."
            return
        if ":" in line:  # "collect the characters ... before the first colon"; drop one leading space
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:  # "the whole line as the field name, and the empty string as the field value"
            name, value = line, ""
        fields_seen = True
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
            out.largest_data_buffer = max(out.largest_data_buffer, len(data))
        elif name == "id":
            if "\0" not in value:
                id_buffer = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            out.retry = retry_in_block = int(value)

    for ch in text:
        if after_cr and ch == "\n":  # CRLF: the LF belongs to the CR's line end
            after_cr = False
            continue
        after_cr = ch == "\r"
        if ch in "\r\n":
            process(line)
            line = ""
        else:
            line += ch
            out.peak = max(out.peak, len(line) + len(data))
        out.peak = max(out.peak, len(data))
    # "Once the end of the file is reached, any pending data must be discarded."
    out.truncated = bool(line) or fields_seen
    return out


def feed_chunks(parser: SseParser, stream: bytes, cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        events += parser.feed(stream[start:cut])
        start = cut
    return events


# --- streams to test with ------------------------------------------------------------------------------

LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r"])
FIELD_NAMES = st.sampled_from(["data", "data", "data", "event", "id", "retry", "Data", "other", "data "])
SPECIAL_VALUES = ["", " ", "  x", "0", "1500", "12a", "-1", "\x00", "a:b"]
VALUES = st.one_of(
    st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from([*SPECIAL_VALUES, "\ufeff", "\u0661"]),
)
ASCII_VALUES = st.one_of(
    st.text(st.characters(max_codepoint=127, blacklist_characters="\r\n"), max_size=12),
    st.sampled_from(SPECIAL_VALUES),
)


@st.composite
def field_lines(draw: st.DrawFn, ascii_only: bool = False) -> str:
    kind = draw(st.sampled_from(["colon-space", "colon", "bare", "comment"]))
    name = draw(FIELD_NAMES)
    value = draw(ASCII_VALUES if ascii_only else VALUES)
    if kind == "comment":
        return ":" + value
    if kind == "bare":
        return name
    return f"{name}: {value}" if kind == "colon-space" else f"{name}:{value}"


@st.composite
def event_streams(draw: st.DrawFn, ascii_only: bool = False) -> bytes:
    """Events as a server would render them: field lines, comments, blank lines, mixed line ends, maybe a
    BOM, maybe a truncated tail."""
    parts = ["\ufeff"] if not ascii_only and draw(st.booleans()) else []
    for block in draw(st.lists(st.lists(field_lines(ascii_only), max_size=5), max_size=6)):
        for line in block:
            parts += [line, draw(LINE_ENDS)]
        parts.append(draw(LINE_ENDS))  # the blank line that dispatches
    if draw(st.booleans()):
        parts.append(draw(field_lines(ascii_only)))  # an unterminated last line
    return "".join(parts).encode()


# Raw bytes built from the pieces that matter (line-end bytes, colons, field names, a BOM and its
# fragments, invalid and multi-byte UTF-8), to reach what a well-behaved server never sends.
PIECES = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b":", b" ", b"data", b"event", b"id", b"retry", b"\x00", b"7", b"x",
     b"\xef\xbb\xbf", b"\xef", b"\xbb", b"\xc3\xa9", b"\xe2\x82", b"\xff"]
)  # fmt: skip
RAW_STREAMS = st.lists(PIECES, max_size=40).map(b"".join)
STREAMS = st.one_of(event_streams(), RAW_STREAMS)


def cuts_for(stream: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(stream)), max_size=8)


# --- property tests ------------------------------------------------------------------------------------


@given(st.data())
def test_any_stream_in_any_chunks_parses_as_the_reference(data: st.DataObject) -> None:
    """Incremental parsing equals the standard's algorithm run on the whole stream: events, the last event
    id, the reconnection time and whether the stream ended inside an event."""
    stream = data.draw(STREAMS, label="stream")
    cuts = data.draw(cuts_for(stream), label="cuts")
    expected = reference_parse(stream)
    parser = SseParser()
    assert feed_chunks(parser, stream, cuts) == expected.events
    assert parser.last_event_id == expected.last_event_id
    assert parser.retry == expected.retry
    assert parser.end() is expected.truncated


@given(st.data())
def test_one_byte_at_a_time_parses_as_the_reference(data: st.DataObject) -> None:
    """The hardest chunking: every CRLF, BOM and UTF-8 sequence is split."""
    stream = data.draw(STREAMS)
    parser = SseParser()
    events = [e for i in range(len(stream)) for e in parser.feed(stream[i : i + 1])]
    assert events == reference_parse(stream).events


@given(st.data())
def test_each_event_is_returned_by_the_feed_that_completes_it(data: st.DataObject) -> None:
    """No event waits for later bytes: feeding up to any cut yields the reference's events of that prefix
    (a stream cut right after a CR may still turn out to be a CRLF, which changes nothing before it)."""
    stream = data.draw(STREAMS)
    cut = data.draw(st.integers(0, len(stream)))
    parser = SseParser()
    assert parser.feed(stream[:cut]) == reference_parse(stream[:cut]).events


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
SINGLE_LINE = st.text(
    st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)), max_size=10
)


@given(
    st.lists(
        st.tuples(
            st.one_of(TEXT, TEXT.map(str.encode)),
            st.none() | SINGLE_LINE,
            st.none() | SINGLE_LINE,
            st.none() | st.integers(0, 10**12),
        ),
        max_size=5,
    ),
    st.data(),
)
def test_encoded_events_parse_back_to_what_was_encoded(
    sent: list[tuple[str | bytes, str | None, str | None, int | None]], data: st.DataObject
) -> None:
    """Round trip: encode_event, then feed (in any chunks) gives the same data, type, id and retry; a CR
    in the data arrives as LF (the format cannot carry a CR), an event type "" as the default."""
    stream = b"".join(encode_event(d, event=e, id=i, retry=r) for d, e, i, r in sent)
    expected = []
    last_id = ""
    for d, e, i, r in sent:
        text = d if isinstance(d, str) else d.decode()
        last_id = last_id if i is None else i
        expected.append(Event(text.replace("\r\n", "\n").replace("\r", "\n"), e or "message", last_id, r))
    parser = SseParser()
    assert feed_chunks(parser, stream, data.draw(cuts_for(stream))) == expected
    assert parser.end() is False


@given(st.data(), st.integers(8, 64))
def test_memory_held_never_exceeds_the_bound(data: st.DataObject, limit: int) -> None:
    """After every feed the parser holds at most ``max_event_size`` bytes (incomplete line + data)."""
    stream = data.draw(STREAMS)
    parser = SseParser(max_event_size=limit)
    start = 0
    try:
        for cut in [*sorted(data.draw(cuts_for(stream))), len(stream)]:
            parser.feed(stream[start:cut])
            start = cut
            assert parser.buffered <= limit
    except SseError:
        pass


@given(st.data(), st.integers(4, 40))
def test_the_bound_refuses_exactly_the_streams_that_exceed_it(data: st.DataObject, limit: int) -> None:
    """For ASCII streams (characters = bytes): a line or a data buffer longer than the bound raises,
    whatever the chunking; a stream whose incomplete event never exceeds it parses."""
    stream = data.draw(event_streams(ascii_only=True))
    reference = reference_parse(stream)
    parser = SseParser(max_event_size=limit)
    cuts = data.draw(cuts_for(stream))
    if reference.longest_line > limit or reference.largest_data_buffer > limit:
        with pytest.raises(SseError):
            feed_chunks(parser, stream, cuts)
    elif reference.peak <= limit:
        assert feed_chunks(parser, stream, cuts) == reference.events


# --- unit tests: one rule each --------------------------------------------------------------------------


def parse(*chunks: bytes) -> list[Event]:
    parser = SseParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_utf8_decode_drops_one_bom_at_stream_start() -> None:
    """Spec: "The stream must then be parsed by ... UTF-8 decode" (which drops a leading BOM)."""
    assert parse(b"\xef\xbb\xbfdata: a\n\n") == [Event("a")]


def test_a_bom_split_across_chunks_is_still_dropped() -> None:
    assert parse(b"\xef", b"\xbb", b"\xbfdata: a\n\n") == [Event("a")]


def test_only_the_first_bom_is_dropped() -> None:
    """A second BOM is a character of the first line: the field name is "\\ufeffdata", ignored."""
    assert parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n") == [Event("b")]


def test_a_bom_after_the_stream_start_is_data() -> None:
    assert parse(b"data: a\n\n", b"\xef\xbb\xbfdata: b\n\n") == [Event("a")]
    assert parse(b"data: \xef\xbb\xbfb\n\n") == [Event("\ufeffb")]


def test_invalid_utf8_becomes_replacement_characters() -> None:
    """UTF-8 decode replaces invalid sequences with U+FFFD."""
    assert parse(b"data: a\xffb\xe2\x82\n\n") == [Event("a\ufffdb\ufffd")]


def test_a_utf8_sequence_split_across_chunks_decodes_whole() -> None:
    assert parse(b"data: caf\xc3", b"\xa9\n\n") == [Event("caf\u00e9")]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_lines_end_with_crlf_lf_or_cr(end: bytes) -> None:
    """Spec: "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE FEED (CRLF)
    character pair, a single U+000A LINE FEED (LF) character, or a single U+000D CARRIAGE RETURN (CR)
    character." (9.2.6)"""
    assert parse(b"data: a" + end + b"data: b" + end + end) == [Event("a\nb")]


def test_a_cr_ending_one_chunk_and_an_lf_starting_the_next_are_one_line_end() -> None:
    """A CRLF split across chunks ends one line, not two (two would dispatch an event early)."""
    assert parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [Event("a\nb")]


def test_a_cr_ending_a_chunk_followed_by_something_else_is_a_line_end() -> None:
    assert parse(b"data: a\r", b"data: b\r", b"\r") == [Event("a\nb")]


def test_cr_cr_is_two_line_ends() -> None:
    assert parse(b"data: a\r\rdata: b\r\r") == [Event("a"), Event("b")]


def test_one_space_after_the_colon_is_removed() -> None:
    """Spec: "If value starts with a U+0020 SPACE character, remove it from value." (9.2.6)"""
    assert parse(b"data:a\n\ndata: a\n\ndata:  a\n\n") == [Event("a"), Event("a"), Event(" a")]


def test_a_line_without_a_colon_is_a_field_with_an_empty_value() -> None:
    """Spec: "Process the field using ... the whole line as the field name, and the empty string as the field
    value." Two empty data lines make the data "\\n" (the buffer "\\n\\n" less its last LF)."""
    assert parse(b"data\n\n") == [Event("")]
    assert parse(b"data\ndata\n\n") == [Event("\n")]


def test_the_value_keeps_colons_after_the_first() -> None:
    assert parse(b"data: a: b:c\n\n") == [Event("a: b:c")]


def test_comment_lines_are_ignored() -> None:
    """Spec: "If the line starts with a U+003A COLON character (:): Ignore the line." (9.2.6)"""
    assert parse(b": ping\n:\ndata: a\n: inside\n\n") == [Event("a")]


def test_unknown_and_misspelled_fields_are_ignored() -> None:
    """Spec: "Otherwise: The field is ignored." Field names are compared exactly (case-sensitive)."""
    assert parse(b"Data: x\ndata : x\nfoo: bar\ndata: a\n\n") == [Event("a")]


def test_data_lines_are_joined_with_lf_and_the_last_lf_removed() -> None:
    """Data: "Append the field value to the data buffer, then append a single U+000A LINE FEED";
    dispatch step 3: "If the data buffer's last character is a U+000A LINE FEED, remove it." (9.2.6)"""
    assert parse(b"data: a\ndata:\ndata: b\n\n") == [Event("a\n\nb")]


def test_the_event_type_defaults_to_message_and_resets_after_dispatch() -> None:
    """Dispatch: type is the event type buffer if not empty, else "message"; then the buffer is reset."""
    events = parse(b"event: delta\ndata: a\n\ndata: b\n\nevent:\ndata: c\n\n")
    assert [e.event for e in events] == ["delta", "message", "message"]


def test_an_empty_data_buffer_dispatches_nothing() -> None:
    """Dispatch step 2: "If the data buffer is an empty string, set the data buffer and the event type
    buffer to the empty string and return." The type does not leak into the next event."""
    assert parse(b"event: ping\n\n\ndata: a\n\n") == [Event("a")]


def test_the_last_event_id_persists_across_events() -> None:
    """The id buffer is not reset at dispatch: later events carry the last id seen."""
    events = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "1", "2"]


def test_an_id_after_the_data_applies_to_the_same_event() -> None:
    assert parse(b"data: a\nid: 7\n\n") == [Event("a", id="7")]


def test_an_id_with_nul_is_ignored() -> None:
    """Spec: "If the field value does not contain U+0000 NULL, then set the last event ID buffer ...
    Otherwise, ignore the field." (9.2.6)"""
    assert parse(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n") == [Event("a", id="1"), Event("b", id="1")]


def test_an_empty_id_resets_the_last_event_id() -> None:
    assert parse(b"id: 1\ndata: a\n\nid\ndata: b\n\n") == [Event("a", id="1"), Event("b", id="")]


def test_an_id_without_data_sets_the_last_event_id_at_the_blank_line() -> None:
    """Dispatch step 1 runs before the empty-data check: the last event ID string changes anyway."""
    parser = SseParser()
    assert parser.feed(b"id: 9\n") == []
    assert parser.last_event_id == ""
    assert parser.feed(b"\n") == []
    assert parser.last_event_id == "9"


def test_retry_takes_ascii_digits_only() -> None:
    """Spec: "If the field value consists of only ASCII digits, then interpret the field value as an
    integer in base ten, and set the event stream's reconnection time to that integer. Otherwise, ignore
    the field." (9.2.6) An empty value is not an integer: ignored too."""
    parser = SseParser()
    events = parser.feed(b"retry: 1500\ndata: a\n\nretry: 12a\ndata: b\n\nretry: -1\nretry:\n")
    assert events == [Event("a", retry=1500), Event("b")]
    assert parser.retry == 1500
    parser.feed("retry: \u0661\u0662\n".encode())  # Arabic-Indic digits are digits, not ASCII digits
    parser.feed(b"retry:  3\n")  # " 3" after the one removed space: not all digits
    assert parser.retry == 1500
    parser.feed(b"retry: 0\n\n")  # a retry alone dispatches no event but sets the reconnection time
    assert parser.retry == 0


def test_a_retry_too_long_for_int_is_ignored() -> None:
    parser = SseParser()
    parser.feed(b"retry: " + b"9" * 5000 + b"\n\n")
    assert parser.retry is None


def test_an_event_split_anywhere_across_chunks_arrives_once_complete() -> None:
    stream = b'event: delta\r\nid: 4\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    for cut in range(len(stream) + 1):
        parser = SseParser()
        first = parser.feed(stream[:cut])
        assert first + parser.feed(stream[cut:]) == [Event('{"a":\n1}', "delta", "4")]
        # the empty line is the last CR; its LF changes nothing
        assert first == ([] if cut < len(stream) - 1 else [Event('{"a":\n1}', "delta", "4")])


def test_feed_returns_the_event_as_soon_as_its_blank_line_arrives_and_keeps_nothing() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\n") == []
    assert parser.buffered == len("a\n")
    assert parser.feed(b"\n") == [Event("a")]
    assert parser.buffered == 0


def test_several_events_in_one_chunk_come_back_in_order() -> None:
    assert parse(b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4") == [Event("1"), Event("2"), Event("3")]


def test_end_after_a_complete_event_is_not_truncated() -> None:
    parser = SseParser()
    parser.feed(b"data: a\n\n: bye\n")
    assert parser.end() is False


@pytest.mark.parametrize("tail", [b"data: a\n", b"data: a", b"event: x\n", b"id: 3\n", b": partial"])
def test_end_inside_an_event_is_truncated_and_discards_it(tail: bytes) -> None:
    """Spec: "If the file ends in the middle of an event, before the final empty line, the incomplete event is
    not dispatched"; end() says so, so a proxy can tell a cut-off stream from a finished one."""
    parser = SseParser()
    assert parser.feed(b"data: done\n\n" + tail) == [Event("done")]
    assert parser.end() is True
    with pytest.raises(RuntimeError):
        parser.feed(b"\n")


def test_a_10_mib_line_is_cut_off_at_the_bound() -> None:
    """A provider sending an endless line is refused before the parser holds more than the bound."""
    parser = SseParser(max_event_size=64 * 1024)
    chunk = b"x" * 16384
    with pytest.raises(SseError) as raised:
        parser.feed(b"data: ")
        for _ in range(640):
            parser.feed(chunk)
            assert parser.buffered <= 64 * 1024
    assert isinstance(raised.value, CodecError)
    assert raised.value.status == 502
    assert "65536" in raised.value.detail
    assert parser.buffered == 0  # closed: the buffers are dropped
    with pytest.raises(RuntimeError):
        parser.feed(b"\n\n")


@pytest.mark.parametrize("line", [b"data: " + b"x" * 100, b": " + b"x" * 100, b"event: " + b"x" * 100])
def test_a_long_line_in_one_chunk_is_refused(line: bytes) -> None:
    with pytest.raises(SseError):
        SseParser(max_event_size=64).feed(line + b"\n\n")


def test_data_accumulated_over_short_lines_is_bounded() -> None:
    parser = SseParser(max_event_size=64)
    with pytest.raises(SseError):
        for _ in range(20):
            parser.feed(b"data: 0123456789\n")


def test_the_default_bound_admits_a_large_event() -> None:
    payload = b"y" * (DEFAULT_MAX_EVENT_SIZE - 100)
    assert parse(b"data: " + payload[:1000], payload[1000:] + b"\n\n") == [Event(payload.decode())]


def test_max_event_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SseParser(max_event_size=0)


# --- the writer -------------------------------------------------------------------------------------------


def test_encode_a_one_line_event() -> None:
    assert encode_event('{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event(b"x") == b"data: x\n\n"
    assert encode_event("") == b"data: \n\n"


def test_encode_multi_line_data_as_several_data_lines() -> None:
    assert encode_event("a\nb\r\nc\rd\n") == b"data: a\ndata: b\ndata: c\ndata: d\ndata: \n\n"


def test_encode_type_id_and_retry() -> None:
    assert encode_event("x", event="delta", id="7", retry=3000) == (
        b"event: delta\nid: 7\nretry: 3000\ndata: x\n\n"
    )
    assert encode_event("x", event="", id="") == b"id: \ndata: x\n\n"


@pytest.mark.parametrize(
    "kwargs",
    [{"event": "a\nb"}, {"event": "a\r"}, {"id": "1\n2"}, {"id": "\r"}, {"id": "1\x002"}, {"retry": -1}],
)
def test_encode_refuses_what_the_format_cannot_carry(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_event("x", **kwargs)


def test_encode_comment() -> None:
    assert encode_comment("ping") == b": ping\n"
    assert encode_comment(b"a\nb") == b": a\n: b\n"
    assert parse(encode_comment("a\r\nb") + encode_event("x")) == [Event("x")]
