"""The response cache's keys (fastgw/ai/cache_key.py): requests that mean the same share a key however
their JSON is written; a change to anything that shapes the answer, to the scope, the route or the client
format gives another key; only deterministic requests are cacheable."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fastgw.ai.cache_key import cache_key, deterministic, scope_id
from fastgw.ai.formats.openai import parse_chat_request
from fastgw.policy.rbac import Principal

TEXT = st.text(max_size=30)
MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": TEXT}),
    min_size=1,
    max_size=4,
)
TOOL = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.from_regex(r"[a-z]{1,8}", fullmatch=True), "parameters": st.just({"type": "object"})}
        ),
    }
)
REQUEST = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-4o", "chat-a"]), "messages": MESSAGES},
    optional={
        "temperature": st.sampled_from([0, 0.0, 0.5, 1]),
        "seed": st.integers(min_value=0, max_value=2**31),
        "max_tokens": st.integers(min_value=1, max_value=4096),
        "top_p": st.sampled_from([0.1, 0.9, 1]),
        "stream": st.booleans(),
        "tools": st.lists(TOOL, min_size=1, max_size=2),
        "stop": st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=2),
    },
)
# Output-affecting changes: each turns a request into one that asks for something else.
CHANGES: dict[str, Any] = {
    "model": lambda r: {**r, "model": r["model"] + "-other"},
    "messages": lambda r: {**r, "messages": [*r["messages"], {"role": "user", "content": "more"}]},
    "temperature": lambda r: {**r, "temperature": r.get("temperature", 0) + 0.25},
    "seed": lambda r: {**r, "seed": r.get("seed", 0) + 1},
    "max_tokens": lambda r: {**r, "max_tokens": r.get("max_tokens", 1) + 1},
    "top_p": lambda r: {**r, "top_p": 0.5 if r.get("top_p") != 0.5 else 0.25},
    "stream": lambda r: {**r, "stream": not r.get("stream", False)},
    "tools": lambda r: {
        **r,
        "tools": [*r.get("tools", []), {"type": "function", "function": {"name": "zz"}}],
    },
    "stop": lambda r: {**r, "stop": [*r.get("stop", []), "END"]},
}


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def key_of(request: dict[str, Any], scope: str = "consumer:c1") -> str:
    return cache_key("llm", "openai", scope, parse_chat_request(orjson.dumps(request)))


@given(REQUEST, st.randoms(use_true_random=False))
def test_equal_requests_share_a_key_however_written(request: dict[str, Any], rng: random.Random) -> None:
    again = shuffled(request, rng)
    assert key_of(request) == key_of(again)
    assert len(key_of(request)) == 64  # a SHA-256, hex


@given(REQUEST, st.sampled_from(sorted(CHANGES)))
def test_a_change_that_shapes_the_answer_changes_the_key(request: dict[str, Any], field: str) -> None:
    assert key_of(request) != key_of(CHANGES[field](request))


@given(REQUEST)
def test_scope_route_and_format_are_part_of_the_key(request: dict[str, Any]) -> None:
    pivot = parse_chat_request(orjson.dumps(request))
    keys = {
        cache_key("llm", "openai", "team:a", pivot),
        cache_key("llm", "openai", "team:b", pivot),
        cache_key("other", "openai", "team:a", pivot),
        cache_key("llm", "anthropic", "team:a", pivot),
        # Length-prefixed parts: moving a character from one part to the next is another key.
        cache_key("llm", "openaiteam:", "a", pivot),
    }
    assert len(keys) == 5


def test_integral_floats_are_the_integers_they_equal() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert key_of({**base, "temperature": 0}) == key_of({**base, "temperature": 0.0})
    assert key_of({**base, "temperature": 0, "top_p": 1}) == key_of(
        {**base, "temperature": 0.0, "top_p": 1.0}
    )
    assert key_of({**base, "temperature": 0}) != key_of({**base, "temperature": 0.5})


def test_only_deterministic_requests_are_cacheable() -> None:
    assert deterministic({"temperature": 0})
    assert deterministic({"temperature": 0.0})
    assert deterministic({"temperature": 0.7, "seed": 42})
    assert deterministic({"seed": 0})
    assert not deterministic({})  # the provider's default temperature samples
    assert not deterministic({"temperature": 0.2})
    assert not deterministic({"temperature": False})  # not a number
    assert not deterministic({"seed": None})
    assert not deterministic({"seed": True})


def test_scopes_never_mix_teams_unless_route_wide() -> None:
    alice = Principal("alice", "c1", "red", frozenset(), frozenset())
    bob = Principal("bob", "c2", "red", frozenset(), frozenset())
    carol = Principal("carol", "c3", "blue", frozenset(), frozenset())
    loner = Principal("dave", "c4", "", frozenset(), frozenset())
    assert scope_id("consumer", alice) != scope_id("consumer", bob)
    assert scope_id("team", alice) == scope_id("team", bob) == "team:red"
    assert scope_id("team", carol) != scope_id("team", alice)
    assert scope_id("team", loner) == "consumer:c4"  # no team: its own
    assert scope_id("route", alice) == scope_id("route", carol) == scope_id("route", None)
    assert scope_id("consumer", None) == scope_id("team", None) == "anonymous"


def test_jwt_subjects_and_teams_are_scoped_by_their_issuer() -> None:
    """Two identity providers accepted on one route may both say sub "alice" or team "red": they are not
    the same caller, and must not share cached answers."""
    from fastgw.policy.jwt_auth import JwtIdentity

    def token(issuer: str, sub: str, team: str) -> JwtIdentity:
        return JwtIdentity(sub, sub, team, frozenset(), frozenset(), 2e9, issuer, "")

    corp, partner = token("corp", "alice", "red"), token("partner", "alice", "red")
    assert scope_id("consumer", corp) != scope_id("consumer", partner)
    assert scope_id("team", corp) != scope_id("team", partner)
    assert scope_id("consumer", corp) == scope_id("consumer", token("corp", "alice", "blue"))
