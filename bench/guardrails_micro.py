"""bench/micro.py's ``guardrails`` group: a route's guardrails on a 2 KiB prompt (issue 23's bar: mask +
restore on a 2 KiB prompt <= 50 us).

The prompt is ordinary English prose with a date, a price, a version and two values to mask (an email,
a phone number): what a chat request carries. The rows: every detector scanning a clean prompt (the cost
every request on a guarded route pays), the same with the injection phrase list, mask + restore (scan,
replace, restore an answer of 240 characters holding the placeholders), and the whole per-request check
on a pivot request (ceilings, scan, mask) plus the answer's restoration through the client format.
"""

from __future__ import annotations

import copy
import timeit
from collections.abc import Callable

from fastgw.ai.formats.registry import FORMATS
from fastgw.ai.guardrails.config import compile_guardrails
from fastgw.ai.guardrails.guard import Guardrails
from fastgw.ai.guardrails.masking import Masks
from fastgw.ai.guardrails.report import GuardrailsReport
from fastgw.ai.guardrails.scan import find
from fastgw.ai.guardrails.spec import GuardrailsSpec

PARAGRAPH = (
    "Hi team, following up on yesterday's call about the migration plan. We agreed to move the billing"
    " service to the new cluster in two phases: first the read path, then the write path once the"
    " replication lag stays under a second for a full week. The vendor quoted $4,200 per month for the"
    " larger instance size, which is within the budget we set on 2024-03-15. Release 3.2.1 of the client"
    " library fixes the retry bug we saw last quarter, so please upgrade before the cut-over. "
)
VALUES = " If anything looks off, write to alice.smith@example.com or call +44 20 7946 0958. "
PROMPT = (PARAGRAPH * 5)[: 2048 - len(VALUES)] + VALUES
ANSWER = "Sure: I will write to [EMAIL_1] today and call [PHONE_1] if there is no answer by Friday. " * 3
EVERY_DETECTOR = {"pii": "mask", "national_id": "mask", "secrets": "mask"}


def best(fn: Callable[[], object], number: int = 100, repeat: int = 200) -> float:
    """Microseconds per call, the best of many short batches (5-10 ms each): on a shared machine a
    batch that ran without being preempted is likelier among 200 short ones than among 25 long ones."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def guardrails_steps() -> dict[str, float]:
    assert len(PROMPT) == 2048
    scan = compile_guardrails(GuardrailsSpec(detectors=EVERY_DETECTOR)).scan
    with_injection = compile_guardrails(GuardrailsSpec(detectors=EVERY_DETECTOR, injection="block")).scan
    clean = PROMPT.replace(VALUES, " " * len(VALUES))

    def mask_restore() -> str:
        masks = Masks()
        masks.mask(PROMPT, find(PROMPT, scan))
        return masks.restore(ANSWER)

    assert mask_restore().count("alice.smith@example.com") == 3, "the answer is restored"
    rails = Guardrails(compile_guardrails(GuardrailsSpec(detectors=EVERY_DETECTOR, max_output_tokens=1000)))
    request = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]}
    openai = FORMATS["openai"]

    def whole_request() -> bytes:
        pivot = {"model": "m", "messages": [dict(request["messages"][0])]}  # type: ignore[index]
        fmt = rails.check(pivot, openai, GuardrailsReport())
        return fmt.render_response(copy.deepcopy(answer))

    return {
        "scan a clean 2 KiB prompt, every detector": best(lambda: find(clean, scan)),
        "  ... and the injection phrases": best(lambda: find(clean, with_injection)),
        "mask + restore, 2 KiB prompt, every detector": best(mask_restore),
        "whole check + restored OpenAI answer, 2 KiB": best(whole_request),
    }
