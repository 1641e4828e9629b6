"""[llm] resilience settings as compiled: several weighted keys per provider (api_key still works), and
deadlines per target over the provider's over [llm]'s, each bounded; bad values are precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastgw.ai.config import LlmConfig
from fastgw.ai.resilience import Deadlines
from fastgw.config.compiler import compile_config
from fastgw.config.loader import ConfigError


def config(tmp_path: Path, llm: str = "", provider: str = "", target: str = "") -> str:
    for name in ("one", "two"):
        (tmp_path / name).write_text(f"sk-{name}-key\n")
    return f"""
[[listeners]]
bind = "127.0.0.1:8080"
[upstreams.openai]
targets = ["127.0.0.1:9000"]
[llm]
{llm}
[[llm.providers]]
name = "oa"
kind = "openai"
upstream = "openai"
base_path = "/v1"
{provider}
[[llm.models]]
name = "m"
targets = [{{ provider = "oa", model = "gpt-4o" {target} }}]
[[routes]]
name = "llm"
path = "/v1"
auth = "none"
kind = "llm"
"""


def compiled(text: str) -> LlmConfig:
    llm: LlmConfig = compile_config(text.encode(), "conf/x.toml").sections["llm"]
    return llm


def error_for(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        compile_config(text.encode(), "conf/x.toml")
    return str(info.value)


def test_api_key_is_one_key_named_0(tmp_path: Path) -> None:
    llm = compiled(config(tmp_path, provider=f'api_key = {{ file = "{tmp_path / "one"}" }}'))
    (key,) = llm.providers["oa"].keys
    assert (key.name, key.weight, key.headers) == ("0", 1, ((b"authorization", b"Bearer sk-one-key"),))
    assert not llm.providers["oa"].stored_key
    assert all(name != b"authorization" for name, _ in llm.models["m"].targets[0].target.headers)


def test_several_weighted_keys(tmp_path: Path) -> None:
    keys = f"""api_keys = [
        {{ name = "alpha", key = {{ file = "{tmp_path / "one"}" }}, weight = 3 }},
        {{ key = {{ file = "{tmp_path / "two"}" }} }},
    ]"""
    provider = compiled(config(tmp_path, provider=keys)).providers["oa"]
    assert [(k.name, k.weight, k.headers[0][1]) for k in provider.keys] == [
        ("alpha", 3, b"Bearer sk-one-key"),
        ("1", 1, b"Bearer sk-two-key"),
    ]


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        (
            'api_key = { env = "X" }\napi_keys = [{ key = { env = "Y" } }]',
            "api_keys: give api_key or api_keys",
        ),
        ('api_keys = [{ key = { env = "X" }, weight = 0 }]', "api_keys[0].weight: at least 1"),
        ('api_keys = [{ name = "a b", key = { env = "X" } }]', "api_keys[0].name"),
        (
            'api_keys = [{ name = "k", key = { env = "X" } }, { name = "k", key = { env = "X" } }]',
            "given twice",
        ),
        ("first_token_timeout = 0", "first_token_timeout: more than 0 seconds"),
        ("idle_timeout = 4000", "idle_timeout"),
    ],
)
def test_bad_provider_settings(
    tmp_path: Path, provider: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X", "sk-x")
    monkeypatch.setenv("Y", "sk-y")
    assert expected in error_for(config(tmp_path, provider=provider))


def test_deadlines_target_over_provider_over_llm(tmp_path: Path) -> None:
    llm = compiled(
        config(
            tmp_path,
            llm="connect_timeout = 2.0\nidle_timeout = 7.0",
            provider="first_token_timeout = 5.0\nidle_timeout = 9.0",
            target=", total_timeout = 30.0, idle_timeout = 1.5",
        )
    )
    assert llm.models["m"].targets[0].deadlines == Deadlines(2.0, 5.0, 1.5, 30.0)


def test_defaults(tmp_path: Path) -> None:
    llm = compiled(config(tmp_path))
    settings = llm.resilience
    assert (settings.retries, settings.retry_wait_max, settings.breaker_failures) == (0, 2.0, 1)
    assert llm.models["m"].targets[0].deadlines == Deadlines(10.0, 60.0, 60.0, 600.0)
    assert llm.providers["oa"].stored_key and llm.providers["oa"].keys == ()


@pytest.mark.parametrize(
    ("llm", "expected"),
    [
        ("retries = 4", "llm.retries"),
        ("retries = -1", "llm.retries"),
        ("breaker_failures = 0", "llm.breaker_failures: at least 1"),
        ("cool_down = 10.0\ncool_down_max = 5.0", "llm.cool_down_max: at least cool_down"),
        ("total_timeout = 0.0", "llm.total_timeout: more than 0 seconds"),
        ("retry_backoff = -1.0", "llm.retry_backoff"),
    ],
)
def test_bad_llm_settings(tmp_path: Path, llm: str, expected: str) -> None:
    assert expected in error_for(config(tmp_path, llm=llm))


def test_byok_providers_must_exist(tmp_path: Path) -> None:
    text = config(tmp_path).replace(
        'kind = "llm"\n', 'kind = "llm"\nhandler = { byok_providers = ["nope"] }\n'
    )
    assert "byok_providers: no [[llm.providers]] named 'nope'" in error_for(text)
