"""One request through a route's guardrails, after its body became a pivot request and before any
provider call: the token ceilings, then every configured detector over every text of the prompt.

A ``block`` refuses the request (400 naming the detectors, never the text) whatever else fired; then
``mask`` replaces what its detectors found in the pivot, in place, and the client format is wrapped so
the answer is restored (``answer.py``); ``log`` only names the detectors in the access log. Scanned:
every message's text (string contents and text parts, the system prompt included) and the arguments of
the tool calls in earlier assistant turns; an embeddings request's input strings (masked values stay
masked: an embedding has no text to restore). Not scanned: images, files, tool definitions, token ids.
"""

from __future__ import annotations

import math
from typing import Any, Final

from fastgw.ai.adapter import InvalidRequestError, Json
from fastgw.ai.client_format import ClientFormat
from fastgw.ai.guardrails.answer import GuardedFormat
from fastgw.ai.guardrails.arguments import ArgumentText, ToolCall, argument_texts, parse
from fastgw.ai.guardrails.config import GuardrailsConfig
from fastgw.ai.guardrails.masking import Masks, TooManyValuesError
from fastgw.ai.guardrails.report import LOG_SCAN_MAX, GuardrailsReport
from fastgw.ai.guardrails.scan import Detector, find

# The prompt estimate without a tokenizer: about 4 characters a token in English text (OpenAI's rule of
# thumb; code and other languages run denser, so a ceiling set from it is loose, never tight), plus the
# few tokens each message's role and framing cost.
CHARS_PER_TOKEN: Final = 4
TOKENS_PER_MESSAGE: Final = 4
# The request fields that cap an answer: max_output_tokens clamps them, the response cache keys on them.
OUTPUT_KEYS: Final = ("max_tokens", "max_completion_tokens")

Slot = tuple[Any, Any] | ArgumentText  # a text in the pivot, where it is so that a mask can replace it


def text_slots(pivot: Json, calls: list[ToolCall] | None = None) -> list[Slot]:
    """Every text of the prompt a detector should read (an embeddings request's: its input strings).
    With ``calls``, a tool call's arguments that are JSON are read key by key and string by string
    (arguments.py) and their calls collected; without, as their raw text (the logged prompt)."""
    slots: list[Slot] = []
    inputs = pivot.get("input")
    if isinstance(inputs, str):
        slots.append((pivot, "input"))
    elif isinstance(inputs, list):
        slots.extend((inputs, i) for i, item in enumerate(inputs) if isinstance(item, str))
    for message in pivot.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            slots.append((message, "content"))
        elif isinstance(content, list):
            slots.extend(
                (p, "text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                parsed = parse(function) if calls is not None else None
                if parsed is None:
                    slots.append((function, "arguments"))
                else:
                    assert calls is not None
                    calls.append(parsed)
                    slots.extend(argument_texts(parsed))
    return slots


def _text(slot: Slot) -> str:
    if isinstance(slot, ArgumentText):
        return slot.text
    text: str = slot[0][slot[1]]
    return text


def _replace(slot: Slot, text: str) -> None:
    if isinstance(slot, ArgumentText):
        slot.replace(text)
    else:
        slot[0][slot[1]] = text


# On overlapping matches, the action that protects more wins (scan.find's rank).
_ACTION_RANK: Final = {"block": 2, "mask": 1, "log": 0}


def _slot_hits(
    slot: Slot, scan: tuple[Detector, ...], rank: dict[str, int]
) -> list[tuple[int, int, Detector]]:
    """The matches in a slot's text; for a value in an object, found after its key's name and kept on
    the value: the part of a match in the name is neither masked nor counted here (the key is a text of
    its own)."""
    text = _text(slot)
    prefix = slot.prefix if isinstance(slot, ArgumentText) else ""
    if not prefix:
        return find(text, scan, rank)
    skip = len(prefix)
    return [(max(s, skip) - skip, e - skip, d) for s, e, d in find(prefix + text, scan, rank) if e > skip]


def estimate_prompt_tokens(pivot: Json, slots: list[Slot], calls: list[ToolCall]) -> int:
    """From the texts' characters; a JSON tool call by its raw arguments (numbers and keys count too)."""
    chars = sum(len(_text(slot)) for slot in slots if not isinstance(slot, ArgumentText))
    chars += sum(len(call.raw) for call in calls)
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(pivot.get("messages") or ())


class Guardrails:
    """A route's compiled guardrails; ``check`` runs per request."""

    __slots__ = ("config",)

    def __init__(self, config: GuardrailsConfig) -> None:
        self.config = config

    def check(self, pivot: Json, fmt: ClientFormat, report: GuardrailsReport) -> ClientFormat:
        """Apply the guardrails to ``pivot`` (masked in place); the format to answer the client with.
        Raises InvalidRequestError (a 400 in the client's shape) for a refusal."""
        config = self.config
        calls: list[ToolCall] = []
        slots = text_slots(pivot, calls)
        param = "messages" if "messages" in pivot else "input"  # what a refusal names: chat or embeddings
        if config.max_prompt_tokens:
            estimate = estimate_prompt_tokens(pivot, slots, calls)
            if estimate > config.max_prompt_tokens:
                raise InvalidRequestError(
                    f"the prompt is about {estimate} tokens, over this route's limit of"
                    f" {config.max_prompt_tokens}",
                    param,
                    "prompt_too_long",
                )
        if config.max_output_tokens and "messages" in pivot:  # chat, not embeddings
            self._output_limit(pivot)
        report.log_prompts = config.log_prompts
        if config.log_prompts:
            report.prompt = _prompt_text(pivot)
        if not config.scan:
            return fmt if not config.log_prompts else GuardedFormat(fmt, Masks(), report)
        actions = config.actions
        rank = {name: _ACTION_RANK[action] for name, action in actions.items()}
        found = [(slot, _slot_hits(slot, config.scan, rank)) for slot in slots]
        for call in calls:  # the raw text too: a value under a duplicate key, dropped by parsing
            for _, _, detector in find(call.raw, config.scan, rank):
                action = report.fired[detector.name] = actions[detector.name]
                call.dirty = call.dirty or action == "mask"  # written again: the hidden copy goes
        for _, hits in found:
            for _, _, detector in hits:
                report.fired[detector.name] = actions[detector.name]
        blocked = sorted(name for name, action in report.fired.items() if action == "block")
        if blocked:
            raise InvalidRequestError(
                f"the request was blocked by this route's guardrails: {', '.join(blocked)} detected",
                param,
                "guardrail_blocked",
            )
        masks = Masks()
        if "mask" in actions.values():
            for slot in slots:
                masks.reserve(_text(slot))
        try:
            for slot, hits in found:
                masked = [h for h in hits if actions[h[2].name] == "mask"]
                if masked:
                    _replace(slot, masks.mask(_text(slot), masked))
        except TooManyValuesError as exc:
            raise InvalidRequestError(
                f"the prompt has too many distinct {exc.args[0].lower()} values to mask",
                param,
                "guardrail_blocked",
            ) from None
        for call in calls:  # the masked texts back into their calls' JSON (only calls that changed)
            call.write_back()
        if masks.by_placeholder or config.log_prompts:
            return GuardedFormat(fmt, masks, report)
        return fmt

    def _output_limit(self, pivot: Json) -> None:
        most = self.config.max_output_tokens
        limit = f"this route's limit of {most} output tokens"
        n = pivot.get("n")
        if isinstance(n, int) and n > 1:  # n answers share the ceiling: it caps the request, not a choice
            if n > most:
                raise InvalidRequestError(f"n is {n}: {limit} cannot give each answer a token", "n")
            most //= n
            limit += f" shared by n = {n} answers ({most} each)"
        asked = [k for k in OUTPUT_KEYS if isinstance(pivot.get(k), int)]
        if not asked:
            pivot["max_tokens"] = most
        for key in asked:
            if pivot[key] <= most:
                continue
            if not self.config.clamp_output:
                raise InvalidRequestError(
                    f"{key} is {pivot[key]}, over {limit}",
                    key,
                    "max_tokens_too_large",
                )
            pivot[key] = most


def _prompt_text(pivot: Json) -> str:
    """The prompt's texts, one ``role: text`` line each, cut to what the log redacts (report.py)."""
    lines = []
    for message in pivot.get("messages") or ():
        if isinstance(message, dict):
            texts = [_text(slot) for slot in text_slots({"messages": [message]})]
            lines.append(f"{message.get('role')}: {' '.join(texts)}")
    return "\n".join(lines)[:LOG_SCAN_MAX]
