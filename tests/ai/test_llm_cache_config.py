"""An llm route's ``cache`` table as compiled: defaults, and every bad value refused with the key it is
in and why (docs/llm-cache.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgw.ai.cache import ResponseCache
from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError


def config(cache: str) -> str:
    return f"""
[[listeners]]
bind = "127.0.0.1:8080"
[upstreams.openai]
targets = ["127.0.0.1:9000"]
[[llm.providers]]
name = "oa"
kind = "openai"
upstream = "openai"
base_path = "/v1"
[[llm.models]]
name = "m"
targets = [{{ provider = "oa", model = "gpt-4o" }}]
[[routes]]
name = "llm"
path = "/v1"
auth = "none"
kind = "llm"
handler = {{ cache = {cache} }}
"""


def route_cache(cache: str) -> ResponseCache:
    snapshot = compile_config(config(cache).encode(), "conf/x.toml")
    found = snapshot.routes[0].handler.cache
    assert isinstance(found, ResponseCache)
    return found


def error_for(cache: str) -> str:
    with pytest.raises(ConfigError) as info:
        compile_config(config(cache).encode(), "conf/x.toml")
    return str(info.value)


def test_defaults() -> None:
    cache = route_cache("{}")
    s = cache.settings
    assert (s.ttl, s.max_bytes, s.max_entry_bytes, s.scope, s.redis_url) == (
        300.0,
        64 << 20,
        1 << 20,
        "consumer",
        "",
    )
    assert cache.redis is None and cache.route == "llm"


def test_a_redis_url_from_a_secret(tmp_path: Path) -> None:
    secret = tmp_path / "redis.url"
    secret.write_text("redis://:pw@127.0.0.1:6379/0\n")
    cache = route_cache(f'{{ redis_url_secret = {{ file = "{secret}" }}, scope = "team", ttl = 30 }}')
    assert cache.redis is not None and cache.settings.scope == "team"
    assert "pw" not in cache.redis.where


@pytest.mark.parametrize(
    ("cache", "key", "reason"),
    [
        ("{ ttl = 0 }", "cache.ttl", "greater than 0"),
        ("{ ttl = -5 }", "cache.ttl", "greater than 0"),
        ("{ ttl = 9999999 }", "ttl", "a week"),
        ("{ max_bytes = 1000, max_entry_bytes = 2000 }", "cache.max_bytes", "smaller than max_entry_bytes"),
        ("{ max_entry_bytes = 0 }", "cache.max_entry_bytes", "at least 1"),
        ("{ max_entry_bytes = 1073741824 }", "max_entry_bytes", "one command"),
        ("{ scope = 'everyone' }", "scope", "consumer"),
        ("{ redis_url = 'http://127.0.0.1' }", "cache.redis_url", "redis://"),
        ("{ redis_url = 'redis://:hunter2@127.0.0.1' }", "cache.redis_url", "redis_url_secret"),
        ("{ redis_timeout = 0 }", "cache.redis_timeout", "greater than 0"),
        ("{ redis_timeout = 60 }", "redis_timeout", "slows"),
        ("{ tll = 5 }", "tll", ""),
    ],
)
def test_bad_values_are_refused_by_key(cache: str, key: str, reason: str) -> None:
    message = error_for(cache)
    assert key in message and reason in message
    assert "routes[0].handler" in message
    assert "hunter2" not in message
