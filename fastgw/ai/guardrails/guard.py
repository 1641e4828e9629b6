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

import orjson

from fastgw.ai.adapter import InvalidRequestError, Json
from fastgw.ai.client_format import ClientFormat
from fastgw.ai.guardrails.answer import GuardedFormat
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

Slot = tuple[Any, Any]  # a text in the pivot: its container (dict or list) and key, so it can be replaced


def text_slots(pivot: Json, parsed: list[tuple[Json, Any]] | None = None) -> list[Slot]:
    """Every text of the prompt a detector should read (an embeddings request's: its input strings). A
    tool call's arguments are read as the strings of their JSON, decoded (an escape such as ``\\u0040``
    hides nothing), each after its key's name (``aws_secret_access_key: ...``: a secret known by its
    name is still found) and masked alone (a match that took the key's name and quotes with it broke the
    JSON the provider got); ``parsed`` collects (function, its arguments parsed) to write back."""
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
                slots.extend(_argument_slots(function, parsed))
    return slots


def _argument_slots(function: Json, parsed: list[tuple[Json, Any]] | None) -> list[Slot]:
    """The string slots of a tool call's JSON arguments, or the raw text when it is no JSON."""
    try:
        value = orjson.loads(function["arguments"])
    except orjson.JSONDecodeError:
        return [(function, "arguments")]
    if not isinstance(value, (dict, list)):  # a bare string or number: read as it is
        return [(function, "arguments")]
    if parsed is not None:
        parsed.append((function, value))
    slots: list[Slot] = []
    stack = [value]  # a walk, not a recursion: a client's JSON may be nested past the recursion limit
    while stack:
        node = stack.pop()
        named = isinstance(node, dict)
        items: Any = ()
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        for key, item in items:
            if isinstance(item, str):
                slots.append(NamedSlot(node, key) if named else (node, key))
            elif isinstance(item, (dict, list)):
                stack.append(item)
    return slots


class NamedSlot(tuple[Any, Any]):
    """A string of a JSON object in a tool call's arguments: read after its key's name (``prefix``)."""

    __slots__ = ()

    def __new__(cls, container: Any, key: Any) -> NamedSlot:
        return super().__new__(cls, (container, key))

    @property
    def prefix(self) -> str:
        return f"{self[1]}: "


# On overlapping matches, the action that protects more wins (scan.find's rank).
_ACTION_RANK: Final = {"block": 2, "mask": 1, "log": 0}


def _slot_hits(
    slot: Slot, scan: tuple[Detector, ...], rank: dict[str, int]
) -> list[tuple[int, int, Detector]]:
    """The matches in a slot's text; for a NamedSlot, found after its key's name and kept on the value:
    the part of a match in the name is neither masked nor logged (a name is no secret)."""
    text = slot[0][slot[1]]
    if not isinstance(slot, NamedSlot):
        return find(text, scan, rank)
    prefix = slot.prefix
    skip = len(prefix)
    return [(max(s, skip) - skip, e - skip, d) for s, e, d in find(prefix + text, scan, rank) if e > skip]


def estimate_prompt_tokens(pivot: Json, slots: list[Slot]) -> int:
    chars = sum(len(container[key]) for container, key in slots)
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
        parsed: list[tuple[Json, Any]] = []
        slots = text_slots(pivot, parsed)
        param = "messages" if "messages" in pivot else "input"  # what a refusal names: chat or embeddings
        if config.max_prompt_tokens:
            estimate = estimate_prompt_tokens(pivot, slots)
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
            for container, key in slots:
                masks.reserve(container[key])
        try:
            for (container, key), hits in found:
                masked = [h for h in hits if actions[h[2].name] == "mask"]
                if masked:
                    container[key] = masks.mask(container[key], masked)
        except TooManyValuesError as exc:
            raise InvalidRequestError(
                f"the prompt has too many distinct {exc.args[0].lower()} values to mask",
                param,
                "guardrail_blocked",
            ) from None
        if masks.by_placeholder:
            for function, value in parsed:  # the masked strings back into their calls' JSON
                function["arguments"] = orjson.dumps(value).decode()
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
            texts = [c[k] for c, k in text_slots({"messages": [message]})]
            lines.append(f"{message.get('role')}: {' '.join(texts)}")
    return "\n".join(lines)[:LOG_SCAN_MAX]
