"""A gateway with a usage ledger in front of the fake OpenAI provider (fake_openai.py), for the ledger's
end-to-end tests and bench/ledger_exact.py: API-key consumers, a priced model (``mini`` ->
gpt-4o-mini, priced by the shipped table) and an unpriced one (``house`` -> house-model), an admin
listener for ``GET /usage``. What the fake served (its ``answers``) is what the ledger must hold.

``{port}``, ``{log}`` and ``{state}`` are left for ``start_gateway`` to fill in.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.fake_openai import FakeOpenAI

PROVIDER_KEY = "sk-fake-ledger-0123456789"
# gpt-4o-mini's shipped price, USD per million tokens (fastgw/data/prices.toml).
MINI_INPUT, MINI_OUTPUT = 0.15, 0.60


def ledger_config(fake_port: int, admin_port: int, secrets: Path) -> str:
    (secrets / "provider.key").write_text(PROVIDER_KEY + "\n")
    return f"""
[[listeners]]
bind = "127.0.0.1:{{port}}"

[upstreams.fake]
targets = ["127.0.0.1:{fake_port}"]

[[llm.providers]]
name = "oa"
kind = "openai"
upstream = "fake"
base_path = "/v1"
api_key = {{ file = "{secrets / "provider.key"}" }}

[[llm.models]]
name = "mini"
targets = [{{ provider = "oa", model = "gpt-4o-mini" }}]

[[llm.models]]
name = "house"
targets = [{{ provider = "oa", model = "house-model" }}]

[[routes]]
name = "llm"
path = "/v1"
kind = "llm"
auth = "api_key"

[admin]
bind = "127.0.0.1:{admin_port}"
token = {{ file = "{secrets / "admin.token"}" }}

[keys]
pepper = {{ file = "{secrets / "pepper"}" }}

[api_key]
headers = ["Authorization"]

[access_log]
target = "{{log}}"
"""


def start_fake() -> FakeOpenAI:
    fake = FakeOpenAI(api_key=PROVIDER_KEY).start_in_thread()
    fake.models.append("house-model")
    return fake


def served(fake: FakeOpenAI) -> dict[str, Counter[str]]:
    """What the fake answered, per provider model: requests and tokens."""
    out: dict[str, Counter[str]] = {}
    for answer in list(fake.answers):
        sums = out.setdefault(answer.model, Counter())
        sums["requests"] += 1
        sums["prompt_tokens"] += answer.usage.get("prompt_tokens", 0)
        sums["completion_tokens"] += answer.usage.get("completion_tokens", 0)
    return out


def mini_cost_usd(fake: FakeOpenAI) -> float:
    """gpt-4o-mini's cost of what the fake answered, summed per request in 1e-9 USD as the ledger sums."""
    nanos = 0
    for answer in list(fake.answers):
        if answer.model == "gpt-4o-mini":
            usage: dict[str, Any] = answer.usage
            cost = (usage["prompt_tokens"] * MINI_INPUT + usage["completion_tokens"] * MINI_OUTPUT) / 1e6
            nanos += round(cost * 1e9)
    return nanos / 1e9


def postgres_store(secrets: Path, dsn: str) -> str:
    """Config lines putting the store (and so the ledger) on PostgreSQL, for ``ledger_config``'s text.
    ``connect_timeout`` is short and the restart backoff capped at 1 s, so a control process restarted
    during an outage keeps trying and comes back within a second or two of the database."""
    (secrets / "store.dsn").write_text(dsn + "\n")
    return f"""
[store]
backend = "postgres"
dsn = {{ file = "{secrets / "store.dsn"}" }}
connect_timeout = 2

[process]
restart_backoff_max = 1
"""


def ask(url: str, key: str, model: str, i: int) -> None:
    """One chat completion through the gateway at ``url``, on a new connection; every other one streamed.
    Raises on any failure (a status other than 200 included)."""
    import openai

    messages: Any = [{"role": "user", "content": " ".join(["word"] * (1 + i % 7))}]
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=10) as sdk:
        if i % 2:
            sdk.chat.completions.create(model=model, messages=messages)
            return
        options: Any = {"include_usage": True}
        with sdk.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options=options
        ) as stream:
            for _ in stream:
                pass


def spooled_requests(state: Path) -> int:
    """Requests in the ledger spool of the node whose state directory is ``state`` (read, not opened)."""
    import orjson

    from fastgw.control.ledger_spool import SPOOL_FILE

    path = state / SPOOL_FILE
    if not path.exists():
        return 0
    total = 0
    for line in path.read_bytes().splitlines():
        total += sum(int(row[7]) for row in orjson.loads(line)["rows"])
    return total
