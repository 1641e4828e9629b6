"""strip_extensions: the pivot's non-OpenAI hint fields removed for adapters without them, copy on write."""

from __future__ import annotations

from fastgw.ai.pivot_extensions import strip_extensions

BREAKPOINT = {"type": "ephemeral"}


def test_nothing_to_strip_returns_the_same_object() -> None:
    pivot = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert strip_extensions(pivot) is pivot


def test_hints_are_removed_without_touching_the_original() -> None:
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
        "cache_control": BREAKPOINT,
    }
    pivot = {
        "model": "m",
        "anthropic_beta": ["x"],
        "top_k": 5,
        "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": BREAKPOINT}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": BREAKPOINT}]},
            {"role": "assistant", "content": None, "tool_calls": [call], "thinking_blocks": [{"type": "x"}]},
            {
                "role": "tool",
                "tool_call_id": "c",
                "content": "1",
                "is_error": True,
                "cache_control": BREAKPOINT,
            },
        ],
    }
    stripped = strip_extensions(pivot)
    assert stripped == {
        "model": "m",
        "top_k": 5,  # a request parameter: the adapter refuses or drops it by its capability rules
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{k: v for k, v in call.items() if k != "cache_control"}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "1"},
        ],
    }
    assert pivot["anthropic_beta"] == ["x"]
    assert pivot["messages"][2]["is_error"] is True
