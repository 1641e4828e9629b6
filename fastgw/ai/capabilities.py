"""Capabilities applied to a pivot request: what a target cannot honour is refused, or dropped where the
model's ``drop_unsupported`` lists it (issue 22: "an unsupported parameter is a clear 400, never silently
dropped", configurable per model).

Every adapter calls :func:`apply_capabilities` with its kind's (or its model's) ``Capabilities``, so the
parameter names a client sees in the 400 and an operator writes in ``drop_unsupported`` are the same for
every provider: ``tools``, ``image_url``, ``response_format``, ``system``, ``n``, ``logprobs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from fastgw.ai.adapter import Capabilities, Json, ProviderTarget, UnsupportedParameterError


def _has_images(pivot: Json) -> bool:
    for message in pivot["messages"]:
        content = message.get("content")
        if type(content) is list and any(part.get("type") == "image_url" for part in content):
            return True
    return False


def _drop_images(pivot: Json) -> None:
    pivot["messages"] = [_without_images(message) for message in pivot["messages"]]


def _without_images(message: Json) -> Json:
    content = message.get("content")
    if type(content) is not list:
        return message
    return {**message, "content": [part for part in content if part.get("type") != "image_url"]}


def _has_system(pivot: Json) -> bool:
    return any(m.get("role") in ("system", "developer") for m in pivot["messages"])


def _drop_system(pivot: Json) -> None:
    pivot["messages"] = [m for m in pivot["messages"] if m.get("role") not in ("system", "developer")]


def _response_format(pivot: Json) -> str:
    fmt = pivot.get("response_format")
    return fmt.get("type", "") if type(fmt) is dict else ""


def _pop(*names: str) -> Callable[[Json], None]:
    def drop(pivot: Json) -> None:
        for name in names:
            pivot.pop(name, None)

    return drop


# One row per capability: (flag, parameter named in the error and in drop_unsupported, needs it?, drop it).
Rule = tuple[str, str, Callable[[Json], bool], Callable[[Json], None]]
# A table, not a chain of ifs: a new capability is a new row (STYLE.md 2).
_CAPABILITY_RULES: Final[tuple[Rule, ...]] = (
    ("tools", "tools", lambda p: bool(p.get("tools")), _pop("tools", "tool_choice", "parallel_tool_calls")),
    ("vision", "image_url", _has_images, _drop_images),
    (
        "json_schema",
        "response_format",
        lambda p: _response_format(p) == "json_schema",
        _pop("response_format"),
    ),
    (
        "json_object",
        "response_format",
        lambda p: _response_format(p) == "json_object",
        _pop("response_format"),
    ),
    ("system_prompt", "system", _has_system, _drop_system),
    ("n", "n", lambda p: (p.get("n") or 1) > 1, _pop("n")),
    ("logprobs", "logprobs", lambda p: bool(p.get("logprobs")), _pop("logprobs", "top_logprobs")),
)


# The rules a Capabilities lacks, by its id() (kept with it, so an id reused after it is gone never
# matches): the kinds' constants and one per configured model, so a few; the bound is a guard.
_LACKING: Final[dict[int, tuple[Capabilities, tuple[Rule, ...]]]] = {}
_LACKING_MAX: Final = 1024


def _lacking(capabilities: Capabilities) -> tuple[Rule, ...]:
    """The rules for what ``capabilities`` lacks (none for a provider with every capability): looked up
    once per Capabilities object rather than seven attribute reads per request."""
    kept = _LACKING.get(id(capabilities))
    if kept is None or kept[0] is not capabilities:
        rules = tuple(rule for rule in _CAPABILITY_RULES if not getattr(capabilities, rule[0]))
        if len(_LACKING) >= _LACKING_MAX:
            _LACKING.clear()
        kept = _LACKING[id(capabilities)] = (capabilities, rules)
    return kept[1]


def apply_capabilities(pivot: Json, capabilities: Capabilities, target: ProviderTarget, kind: str) -> Json:
    """``pivot`` less what the target cannot honour: ``pivot`` itself when nothing is dropped, else a
    shallow copy (the pivot is never changed: the handler may send it to the next target).

    Raises:
        UnsupportedParameterError: a needed capability is missing and ``target.drop_unsupported`` does not
            name its parameter.
    """
    out = pivot
    for _flag, param, needs, drop in _lacking(capabilities):
        if needs(out):
            if param not in target.drop_unsupported:
                raise UnsupportedParameterError(param, kind)
            if out is pivot:
                out = dict(pivot)
            drop(out)
    return out
