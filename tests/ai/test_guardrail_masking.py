"""Masking is reversible and the stream restorer is exact: whatever the chunk boundaries, the client reads
the original values, and the look-behind never holds more than HOLD_MAX characters."""

from __future__ import annotations

import itertools

from hypothesis import example, given
from hypothesis import strategies as st

from fastgw.ai.guardrails.detectors import DETECTORS
from fastgw.ai.guardrails.masking import HOLD_MAX, PLACEHOLDER, Masks, StreamRestorer, redact
from fastgw.ai.guardrails.scan import find

ALL = tuple(DETECTORS.values())
VALUES = ["alice@example.com", "bob.smith@mail.example.org", "+44 20 7946 0958", "4111 1111 1111 1111"]
words = st.sampled_from(["hello", "the", "order", "2024-03-15", "[note]", "[", "]", "A", "x" * 30, "\n"])


@st.composite
def prompts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(words, st.sampled_from(VALUES)), min_size=1, max_size=30))
    # Words apart by ", ": a number written right after another with only a space between them reads as
    # one longer number, which no detector claims (docs/llm-guardrails.md, "Limits").
    return ", ".join(parts)


def masked(text: str) -> tuple[Masks, str]:
    masks = Masks()
    return masks, masks.mask(text, find(text, ALL))


@given(prompts())
def test_mask_then_restore_is_the_original_and_hides_every_value(text: str) -> None:
    masks, out = masked(text)
    assert all(value not in out for value in VALUES)
    assert masks.restore(out) == text


def test_the_same_value_gets_the_same_placeholder() -> None:
    _, out = masked("a@example.com, b@example.com and a@example.com again")
    assert out == "[EMAIL_1], [EMAIL_2] and [EMAIL_1] again"


ANSWER_PIECES = st.sampled_from(
    [
        "[EMAIL_1]",
        "[EMAIL_12]",
        "[EMAIL_1",
        "EMAIL_1]",
        "[[EMAIL_2]]",
        "[PHONE_1]",
        "[KEY_3]",
        "[KEY_1]",
        "[",
        "]",
        "_1]",
        " ",
        "x",
    ]
)


@example(values=["KEY", "v", "a@example.com"], pieces=["[", "[EMAIL_1]", "_1]"])  # "[KEY_1]", issued
@given(
    st.lists(
        st.sampled_from(["a@example.com", "b@example.com", "[PHONE_1]", "[x", "x]", "KEY", "1", "v"]),
        max_size=12,
    ),
    st.lists(ANSWER_PIECES, max_size=20),
)
def test_an_answer_is_restored_as_one_substitution_would(values: list[str], pieces: list[str]) -> None:
    """A few placeholders are put back by one replace each, many (or a value that could make one with
    the text around it: "KEY" in "[" + "[EMAIL_1]" + "_1]") by one substitution: both give what a single
    left-to-right substitution of the issued placeholders gives, values never read again."""
    masks = Masks()
    for i, value in enumerate(values):
        masks.placeholder(("EMAIL", "PHONE", "KEY")[i % 3], value)
    answer = "".join(pieces)
    table = masks.by_placeholder
    assert masks.restore(answer) == PLACEHOLDER.sub(lambda m: table.get(m.group(), m.group()), answer)


def test_placeholders_not_issued_are_left_alone() -> None:
    masks, _ = masked("mail a@example.com")
    assert (
        masks.restore("[EMAIL_1] [EMAIL_2] [PHONE_1] [EMAIL_1")
        == "a@example.com [EMAIL_2] [PHONE_1] [EMAIL_1"
    )


@given(prompts(), st.lists(st.integers(min_value=0, max_value=400), max_size=40))
def test_a_streamed_answer_is_restored_whatever_the_chunk_boundaries(text: str, cuts: list[int]) -> None:
    masks, answer = masked(text)
    bounds = sorted({min(c, len(answer)) for c in cuts} | {0, len(answer)})
    restorer = StreamRestorer(masks)
    out = []
    for start, end in itertools.pairwise(bounds):
        out.append(restorer.feed((0, "content"), answer[start:end]))
        assert len(restorer.held.get((0, "content"), "")) <= HOLD_MAX
    out.append(restorer.flush((0, "content")))
    assert "".join(out) == text


def test_a_placeholder_split_in_one_character_chunks_is_restored() -> None:
    masks, answer = masked("write to alice@example.com now")
    restorer = StreamRestorer(masks)
    pieces = [restorer.feed(("c",), ch) for ch in answer] + [restorer.flush(("c",))]
    assert "".join(pieces) == "write to alice@example.com now"
    assert "[" not in "".join(pieces)


def test_redaction_for_logs_keeps_no_value() -> None:
    text = "mail alice@example.com, card 4111-1111-1111-1111, key AKIAIOSFODNN7EXAMPLE"
    assert redact(text, ALL) == "mail [EMAIL], card [PAYMENT_CARD], key [AWS_ACCESS_KEY]"


def test_a_value_hidden_with_invisible_characters_is_masked_whole_and_restored_exactly() -> None:
    text = "write to alice\u200b@exam\u200dple.com and bob\uff20example.com, card 4111 11\u200b11 1111 1111."
    masks, out = masked(text)
    assert "alice" not in out and "bob" not in out and "4111" not in out and "\u200b" not in out, out
    assert masks.restore(out) == text
    assert redact(text, ALL) == "write to [EMAIL] and [EMAIL], card [PAYMENT_CARD]."
