"""Guardrails on llm routes: detectors of personal data and secrets in prompts, prompt-injection phrase
lists, and what a route does when one fires (mask with reversible placeholders, block, or log), plus
per-route prompt and output token ceilings and opt-in redacted prompt logging.

``detectors.py`` finds (precompiled regexes, then validation: Luhn, mod-97, ranges); ``injection.py``
compiles phrase lists; ``masking.py`` replaces and restores (whole answers and streams, with a bounded
look-behind); ``config.py`` is the route's ``guardrails`` table; ``guard.py`` applies it to one request;
``answer.py`` restores the answer on its way back to the client. See docs/llm-guardrails.md.
"""
