"""A route's ``guardrails`` table (``handler = { guardrails = { ... } }`` or ``[routes.handler.guardrails]``
on an llm route): the spec alone, so that the llm handler kind (loaded by every process) declares the
table without loading the detectors; ``config.py`` compiles it for the routes that have one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

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
