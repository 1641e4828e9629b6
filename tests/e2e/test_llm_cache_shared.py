"""Who shares the response cache (docs/llm-cache.md): consumers of one team do with ``scope = "team"``,
consumers of different teams never do; gateways (nodes, each its own worker) share entries through a
real redis-server, and when Redis goes down requests are still answered, from each worker's memory or
the provider, with a log line at the outage and at the recovery."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.api_keys import KEY_RE
from tests.support.cli import fastgw
from tests.support.gateways import Gateway, start_gateway
from tests.support.llm_gateway import LlmStack, llm_config
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LlmStack]:
    started = LlmStack.start(tmp_path)
    started.openai.first_token_delay = 0.0
    yield started
    started.close()


def gateway(tmp_path: Path, stack: LlmStack, name: str, route: str) -> Gateway:
    pepper = tmp_path / "pepper"
    if not pepper.exists():
        pepper.write_bytes(os.urandom(32).hex().encode())
    extra = f"""
        {route}

        [keys]
        pepper = {{ file = "{pepper}" }}

        [api_key]
        headers = ["Authorization"]
    """
    return start_gateway(
        tmp_path, llm_config(stack, tmp_path / "secrets", free_port(), extra=extra), name=name
    )


def ask(gw: Gateway, prefix: str, key: str, text: str) -> str:
    """One deterministic question; its x-fastgw-cache."""
    with openai.OpenAI(base_url=gw.url + prefix, api_key=key, max_retries=0, timeout=20) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat-openai", messages=[{"role": "user", "content": text}], temperature=0
        )
        assert raw.parse().choices[0].message.content
        return raw.headers["x-fastgw-cache"]


def calls(stack: LlmStack) -> int:
    return sum(1 for r in stack.openai.requests if r.path == "/chat/completions")


def new_key(gw: Gateway, consumer: str, team: str) -> str:
    created = fastgw("consumers", "create", consumer, "--team", team, "--config", str(gw.config))
    assert created.returncode == 0, created.stderr
    issued = fastgw("keys", "create", consumer, "--config", str(gw.config))
    match = KEY_RE.search(issued.stdout)
    assert match is not None, issued.stdout + issued.stderr
    return match.group(0)


def test_teams_share_within_and_never_across(tmp_path: Path, stack: LlmStack) -> None:
    route = """
        [[routes]]
        name = "teams"
        path = "/teams/v1"
        strip_prefix = true
        auth = "api_key"
        kind = "llm"
        handler = { cache = { scope = "team" } }

        [[routes]]
        name = "own"
        path = "/own/v1"
        strip_prefix = true
        auth = "api_key"
        kind = "llm"
        handler = { cache = {} }
    """
    gw = gateway(tmp_path, stack, "teams", route)
    try:
        alice, bob, carol = (
            new_key(gw, "alice", "red"),
            new_key(gw, "bob", "red"),
            new_key(gw, "carol", "blue"),
        )
        assert ask(gw, "/teams/v1", alice, "what is our plan") == "miss"
        assert ask(gw, "/teams/v1", bob, "what is our plan") == "hit"  # the same team
        assert ask(gw, "/teams/v1", carol, "what is our plan") == "miss"  # another team: never shared
        assert ask(gw, "/teams/v1", carol, "what is our plan") == "hit"
        assert calls(stack) == 2
        # The default scope is the consumer's own, even within a team.
        assert ask(gw, "/own/v1", alice, "mine alone") == "miss"
        assert ask(gw, "/own/v1", bob, "mine alone") == "miss"
        assert ask(gw, "/own/v1", alice, "mine alone") == "hit"
        assert calls(stack) == 4
    finally:
        assert gw.stop() == 0, gw.stderr()


def shared_route(redis_url: str, more: str = "") -> str:
    """The /shared/v1 llm route, its cache in Redis at ``redis_url`` (``more``: other cache keys)."""
    return f"""
        [[routes]]
        name = "shared"
        path = "/shared/v1"
        strip_prefix = true
        auth = "none"
        kind = "llm"
        [routes.handler.cache]
        scope = "route"
        redis_url = "{redis_url}"
        redis_timeout = 0.5
        {more}
    """


def test_nodes_share_through_redis_and_an_outage_only_loses_the_sharing(
    tmp_path: Path, stack: LlmStack
) -> None:
    redis = RedisServer(tmp_path)
    route = shared_route(redis.url)
    one = gateway(tmp_path, stack, "one", route)
    two = gateway(tmp_path, stack, "two", route)
    try:
        assert ask(one, "/shared/v1", "k", "shared question") == "miss"
        assert ask(two, "/shared/v1", "k", "shared question") == "hit"  # another node, through Redis
        assert calls(stack) == 1

        redis.stop()
        assert ask(two, "/shared/v1", "k", "asked while down") == "miss"  # answered all the same
        assert ask(two, "/shared/v1", "k", "asked while down") == "hit"  # from the worker's memory
        assert ask(two, "/shared/v1", "k", "shared question") == "hit"  # filled from Redis before
        assert calls(stack) == 2
        wait_until(lambda: "response cache store" in two.stderr(), 5, "the outage's log line")
        assert f"redis://127.0.0.1:{redis.port} unavailable" in two.stderr()

        redis.start()
        attempt = iter(range(1000))

        def shared_again() -> bool:
            text = f"after the outage {next(attempt)}"
            ask(one, "/shared/v1", "k", text)
            return ask(two, "/shared/v1", "k", text) == "hit"

        wait_until(shared_again, 15, "node two to read from Redis again", interval=0.2)
        wait_until(lambda: "is back" in two.stderr(), 5, "the recovery's log line")
    finally:
        codes = one.stop(), two.stop()
        redis.stop()
        assert codes == (0, 0), one.stderr() + two.stderr()


def test_a_reload_lowering_the_ttl_applies_to_what_redis_kept(tmp_path: Path, stack: LlmStack) -> None:
    """The key holds neither the ttl nor max_entry_bytes: an entry Redis kept under the old ttl was served
    for as long as that ttl, after a reload had lowered it to a second."""
    redis = RedisServer(tmp_path)
    gw = gateway(tmp_path, stack, "one", shared_route(redis.url, "ttl = 600.0"))
    try:
        assert ask(gw, "/shared/v1", "k", "kept for ten minutes") == "miss"
        assert ask(gw, "/shared/v1", "k", "kept for ten minutes") == "hit"
        gw.config.write_text(gw.config.read_text().replace("ttl = 600.0", "ttl = 1.0"))
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload (SIGHUP) complete" in gw.stderr(), 10, "the reload")
        time.sleep(1.2)  # the entry's age past the new ttl: time itself is what is tested
        assert ask(gw, "/shared/v1", "k", "kept for ten minutes") == "miss"
        assert calls(stack) == 2
    finally:
        code = gw.stop()
        redis.stop()
        assert code == 0, gw.stderr()


def test_a_hit_is_admitted_by_the_budgets_and_served_only_for_a_model_the_config_has(
    tmp_path: Path, stack: LlmStack
) -> None:
    """A hit used to be answered before the route's budgets and the model table were consulted: a key or
    route switched off with a limit of 0 kept getting cached answers, a hit was no request for
    ``requests_per_minute``, and a model a reload removed was still served from what Redis kept."""
    redis = RedisServer(tmp_path)
    budgets = """
        [[routes.handler.budgets]]
        name = "asks"
        key = "route"
        requests_per_minute = 3
    """
    gw = gateway(tmp_path, stack, "one", shared_route(redis.url, budgets))
    try:
        assert ask(gw, "/shared/v1", "k", "kept") == "miss"
        assert ask(gw, "/shared/v1", "k", "kept") == "hit"
        assert ask(gw, "/shared/v1", "k", "kept") == "hit"
        with pytest.raises(openai.RateLimitError):  # the fourth request this minute, a hit or not
            ask(gw, "/shared/v1", "k", "kept")
        assert calls(stack) == 1

        def reload(old: str, new: str) -> None:
            gw.config.write_text(gw.config.read_text().replace(old, new))
            reloads = gw.stderr().count("reload (SIGHUP) complete")
            gw.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: gw.stderr().count("reload (SIGHUP) complete") > reloads, 10, "the reload")

        reload("requests_per_minute = 3", "requests_per_minute = 1000\n        tokens_per_day = 0")
        with pytest.raises(openai.RateLimitError):  # switched off: no answer, cached or not
            ask(gw, "/shared/v1", "k", "kept")
        reload("tokens_per_day = 0", "")
        assert ask(gw, "/shared/v1", "k", "kept") == "hit"  # from Redis: the reload emptied memory

        reload('name = "chat-openai"', 'name = "chat-openai-next"')
        with pytest.raises(openai.NotFoundError):  # the model is gone: Redis's copy is not served
            ask(gw, "/shared/v1", "k", "kept")
        assert calls(stack) == 1
    finally:
        code = gw.stop()
        redis.stop()
        assert code == 0, gw.stderr()
