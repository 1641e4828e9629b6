"""A route's ``guardrails`` table (``spec.py``) compiled once per config: the detectors to scan with and
each one's action, the phrase list as a detector, the ceilings.

Detectors are named one by one or by group (``pii``, ``national_id``, ``secrets``), each with an action;
a detector named alone overrides its group's action. Every mistake is a config error naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastgw.ai.guardrails.detectors import DETECTORS, GROUPS
from fastgw.ai.guardrails.injection import DEFAULT_PHRASES, PHRASES_MAX, injection_detector, phrase_problem
from fastgw.ai.guardrails.scan import Detector
from fastgw.ai.guardrails.spec import GuardrailsSpec


class GuardrailsError(Exception):
    """A ``guardrails`` key that cannot be compiled: ``field`` is its path under the table."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GuardrailsConfig:
    scan: tuple[Detector, ...]  # every detector with an action, prompt injection included
    actions: dict[str, str]  # detector name -> action
    max_prompt_tokens: int
    max_output_tokens: int
    clamp_output: bool
    log_prompts: bool


def compile_guardrails(spec: GuardrailsSpec) -> GuardrailsConfig:
    actions: dict[str, str] = {}
    for key, action in spec.detectors.items():  # groups first, then single detectors over them
        if key in GROUPS:
            actions.update(dict.fromkeys(GROUPS[key], action))
    for key, action in spec.detectors.items():
        if key in GROUPS:
            continue
        if key not in DETECTORS:
            names = ", ".join([*GROUPS, *DETECTORS])
            raise GuardrailsError(f"detectors.{key}", f"no detector or group named {key!r} (one of {names})")
        actions[key] = action
    scan = [DETECTORS[name] for name in actions]
    phrases = (
        DEFAULT_PHRASES if spec.injection_phrases is None else spec.injection_phrases
    ) + spec.extra_injection_phrases
    for name, listed in (
        ("injection_phrases", spec.injection_phrases or ()),
        ("extra_injection_phrases", spec.extra_injection_phrases),
    ):
        for i, phrase in enumerate(listed):
            problem = phrase_problem(phrase)
            if problem:
                raise GuardrailsError(f"{name}[{i}]", f"the phrase {problem}")
    if len(phrases) > PHRASES_MAX:
        raise GuardrailsError("injection_phrases", f"more than {PHRASES_MAX} phrases")
    if spec.injection != "off":
        detector = injection_detector(phrases)
        if detector is None:
            raise GuardrailsError("injection_phrases", "empty, with injection on: name at least one phrase")
        scan.append(detector)
        actions["prompt_injection"] = spec.injection
    for name in ("max_prompt_tokens", "max_output_tokens"):
        if getattr(spec, name) < 0:
            raise GuardrailsError(name, "0 (no limit) or more")
    return GuardrailsConfig(
        tuple(scan),
        actions,
        spec.max_prompt_tokens,
        spec.max_output_tokens,
        spec.over_max_output == "clamp",
        spec.log_prompts,
    )
