"""``fastgw prices check``: the models a config serves that have no price (their cost would be recorded
as unknown). Reads only the config's ``[llm]`` table, so it runs before the gateway (or in CI) with no
secrets at hand. Exit status 1 when a served model has no price, so a deploy pipeline can refuse it."""

from __future__ import annotations

import argparse
import time
from typing import Any

from fastgw.cli.config_files import quickstart


def unpriced(data: bytes, name: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The shipped table's version and every ``[[llm.models]]`` target without a price today:
    (public model, provider, provider model)."""
    from fastgw.ai.config import LlmSpec
    from fastgw.ai.price_config import compile_prices
    from fastgw.ai.prices import utc_day
    from fastgw.config.errors import ConfigError
    from fastgw.config.loader import parse_table

    spec = parse_table(data, name, "llm", LlmSpec)
    kinds = {p.name: p.kind for p in spec.providers}
    table = compile_prices(spec.prices, kinds, lambda key, reason: ConfigError(name, key, reason))
    today = utc_day(time.time())
    missing = []
    for model in spec.models:
        for target in model.targets:
            if table.price(target.provider, target.model, today) is None:
                missing.append((model.name, target.provider, target.model))
    return table.version, missing


def prices(args: argparse.Namespace) -> int:
    from fastgw.config.loader import read_config_bytes

    data, name = quickstart() if args.config is None else (read_config_bytes(args.config), args.config)
    version, missing = unpriced(data, name)
    for model, provider, provider_model in missing:
        print(f"no price: model {model!r} -> provider {provider!r}, model {provider_model!r}")
    if missing:
        print(
            f"{len(missing)} served model target(s) without a price (shipped table {version}): their cost"
            " is recorded as unknown; add [[llm.prices]] entries (docs/llm-usage.md)"
        )
        return 1
    print(f"every served model has a price (shipped table {version})")
    return 0


def add_parser(sub: Any) -> None:
    top = sub.add_parser("prices", help="the LLM price table")
    actions = top.add_subparsers(dest="prices_command", required=True)
    check = actions.add_parser("check", help="list served models without a price (exit 1 if any)")
    check.add_argument("--config", help="the gateway config (default: the built-in quickstart)")
