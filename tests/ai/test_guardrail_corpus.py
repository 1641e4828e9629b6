"""The detectors' false positives, measured on a clean corpus (tests/ai/guardrails_corpus/clean.txt: a
few hundred lines of ordinary prose, code, numbers, dates, prices, version strings, order ids, hashes,
with no personal data and no secrets): each detector's count is printed (``pytest -s``) and bounded, line
by line and over the corpus as one text (the way a long prompt is scanned)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgw.ai.guardrails.detectors import DETECTORS
from fastgw.ai.guardrails.injection import DEFAULT_PHRASES, injection_detector
from fastgw.ai.guardrails.scan import Detector, TextView

CORPUS = Path(__file__).parent / "guardrails_corpus" / "clean.txt"
INJECTION = injection_detector(DEFAULT_PHRASES)
assert INJECTION is not None
DETECTORS_AND_INJECTION = (*DETECTORS.values(), INJECTION)
# Measured: 0 for every detector on this corpus. The bound is that: a change to a pattern that starts
# matching ordinary text fails here, and the printed lines say which.
FALSE_POSITIVES_MAX = 0


def test_the_corpus_is_a_few_hundred_lines() -> None:
    assert len(CORPUS.read_text().splitlines()) >= 300


@pytest.mark.parametrize("detector", DETECTORS_AND_INJECTION, ids=lambda d: d.name)
def test_false_positives_on_the_clean_corpus(detector: Detector) -> None:
    text = CORPUS.read_text()
    lines = text.splitlines()
    hits = [line[s:e] for line in lines for s, e in detector.spans(TextView(line))]
    whole = [text[s:e] for s, e in detector.spans(TextView(text))]
    print(f"\n{detector.name}: {len(hits)} false positives in {len(lines)} lines, {len(whole)} in one text")
    assert len(hits) <= FALSE_POSITIVES_MAX, hits
    assert len(whole) <= FALSE_POSITIVES_MAX, whole
