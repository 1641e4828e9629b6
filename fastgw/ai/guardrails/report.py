"""What guardrails did to one request, for its access-log record (``LlmRecord.guardrails``): which
detectors fired and what was done, never the text they matched; and, only on a route with
``log_prompts = true``, the prompt and the answer redacted by every detector (``[EMAIL]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

# A logged prompt or answer is cut to this many characters: the access log is for finding a request, not
# for archiving conversations, and each record is held in memory until its batch is written.
LOG_TEXT_MAX: Final = 4096
# What is kept to be redacted, then cut to LOG_TEXT_MAX: a secret that straddles the cut must be whole
# when the detectors look, or its first part reaches the log in clear. The longest a detector matches is
# a PEM private key block (16 KiB, detectors.py), so 20 KiB past the cut.
LOG_SCAN_MAX: Final = LOG_TEXT_MAX + 20 * 1024


@dataclass(slots=True)
class GuardrailsReport:
    fired: dict[str, str] = field(default_factory=dict)  # detector name -> the action taken
    log_prompts: bool = False
    prompt: str = ""  # the prompt as sent, cut to LOG_SCAN_MAX (redacted, then cut, when logged)
    answer: list[str] = field(default_factory=list)  # the answer's text as the client got it
    answer_chars: int = 0

    def add_answer(self, text: str) -> None:
        if self.log_prompts and text and self.answer_chars < LOG_SCAN_MAX:
            self.answer.append(text[: LOG_SCAN_MAX - self.answer_chars])
            self.answer_chars += len(self.answer[-1])

    def log_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.fired:
            out["fired"] = dict(sorted(self.fired.items()))
        if self.log_prompts:
            # Redacted here, when the record is written, by every detector whatever the route's actions.
            # Imported here: the access log's record type (ai/record.py) holds this report, and must not
            # load the detectors in a process that has no guardrails.
            from fastgw.ai.guardrails.detectors import DETECTORS
            from fastgw.ai.guardrails.masking import redact

            every = tuple(DETECTORS.values())
            out["prompt"] = redact(self.prompt, every)[:LOG_TEXT_MAX]
            out["answer"] = redact("".join(self.answer), every)[:LOG_TEXT_MAX]
        return out
