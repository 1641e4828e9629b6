"""Which llm models an authenticated caller may use: the model list its identity carries.

Every authentication scheme leaves an identity in ``Exchange.consumer``; one that grants models gives it a
``models`` attribute, glob patterns of public model names (``fnmatch``: ``"gpt-4o*"``), or None for "every
model the route serves". The llm handler asks ``may_use`` after the route's own list
(``fastgw/ai/handler.py``, ``model_allowed``), so a caller reaches only what both allow:

- an API key: its consumer's list (``fastgw consumers create NAME --model 'gpt-4o*'``), pushed to the
  workers with the key (``identity.py``);
- a JWT: the claim its issuer names in ``models_claim`` (``jwt_auth.py``), a JSON array of strings or one
  space-separated string (like OAuth's ``scope``). Closed by default: once an issuer names the claim, a
  token without it, or with a claim of another type, may use no model, so a token minted before the
  claim existed is never read as "every model". An issuer without ``models_claim`` grants no list (None);
- a client certificate: the ``models`` of its ``[[mtls.consumers]]`` entry (``mtls.py``), None when unset;
- introspected tokens and anonymous requests: None (the route's list alone decides).
"""

from __future__ import annotations

import fnmatch
from typing import Final

# Patterns read from one token's claim. The token's size already bounds the claim (jwt.max_token_bytes);
# this keeps the per-request check short even for a large token: no real grant lists 256 model patterns.
MAX_CLAIM_MODELS: Final = 256


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """``name`` matches one of the glob patterns (case-sensitive, as model names are)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def models_of(identity: object) -> tuple[str, ...] | None:
    """The identity's model patterns; None (every model) for an identity without a list, or no identity."""
    models = getattr(identity, "models", None)
    return models if isinstance(models, tuple) else None


def may_use(identity: object, name: str) -> bool:
    """Whether the caller authenticated as ``identity`` (``Exchange.consumer``) may use model ``name``."""
    models = models_of(identity)
    return models is None or matches(name, models)


def models_from_claim(value: object) -> tuple[str, ...]:
    """A token's models claim as patterns: an array of strings, or one space-separated string. Anything
    else (absent, a number, an object, an array with no strings) grants nothing: the empty tuple."""
    if isinstance(value, str):
        items: list[object] = list(value.split())
    elif isinstance(value, list):
        items = value
    else:
        return ()
    return tuple(item for item in items if isinstance(item, str) and item)[:MAX_CLAIM_MODELS]
