"""A route's ``guardrails`` table (``handler = { guardrails = { ... } }`` or ``[routes.handler.guardrails]``
on an llm route), compiled once per config into ``Guardrails`` (``guard.py``).

Detectors are named one by one or by group (``pii``, ``national_id``, ``secrets``), each with an action;
a detector named alone overrides its group's action. Every mistake is a config error naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from fastgw.ai.guardrails.detectors import DETECTORS, GROUPS
from fastgw.ai.guardrails.injection import DEFAULT_PHRASES, PHRASES_MAX, injection_detector, phrase_problem
from fastgw.ai.guardrails.scan import Detector
from fastgw.config.fields import doc

Action = Literal["mask", "block", "log"]
# Above any model's context window (the largest are 2 million tokens): a higher ceiling limits nothing.
TOKENS_MAX: Final = (10_000_000, "no model has a context window this large: higher is no limit at all")


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardrailsSpec:
    detectors: dict[str, Action] = doc(
        "detector or group -> action: 'mask' (reversible placeholders restored in the answer), 'block'"
        " (400 naming the detector) or 'log' (the access log names it). Groups: pii (email, phone,"
        " phone_national, payment_card, iban), national_id (us_ssn, uk_nino), secrets (aws_access_key,"
        " aws_secret_key, gcp_api_key, azure_storage_key, private_key, jwt, fastgw_key, provider_key);"
        " a detector named alone overrides its group",
        {},
    )
    injection: Literal["off", "mask", "block", "log"] = doc(
        "what a prompt-injection phrase in the prompt does", "off"
    )
    injection_phrases: tuple[str, ...] | None = doc(
        "the phrase list (case-insensitive, any white space between words), replacing the shipped one",
        None,
    )
    extra_injection_phrases: tuple[str, ...] = doc("phrases added to the list", ())
    max_prompt_tokens: int = doc(
        "refuse a prompt estimated above this many tokens (4 characters a token, 4 more per message);"
        " 0: no limit",
        0,
        most=TOKENS_MAX,
    )
    max_output_tokens: int = doc(
        "the most output tokens a request may ask for (max_tokens / max_completion_tokens); a request"
        " asking for none gets this; 0: no limit",
        0,
        most=TOKENS_MAX,
    )
    over_max_output: Literal["refuse", "clamp"] = doc(
        "a request asking for more than max_output_tokens: 'refuse' (400) or 'clamp' (sent with the maximum)",
        "refuse",
    )
    log_prompts: bool = doc(
        "write the prompt and the answer to the access log, redacted by every detector (4096 characters"
        " each at most); off: prompts and answers are never logged",
        False,
    )


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
