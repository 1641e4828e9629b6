"""``fastgw prompt-apis list|openapi [--config FILE]``: the config's ``[[prompt_api]]`` entries, read from the
file itself (no running gateway needed), as the admin API's ``GET /prompt-apis`` and
``GET /prompt-apis/openapi.json`` give them for the snapshot in force."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from fastgw.cli.config_files import compile_for_tools, load_config


def add_parser(sub: Any) -> None:
    """The ``prompt-apis`` command in fastgw/__main__.py's argument tree."""
    cmd = sub.add_parser("prompt-apis", help="prompt templates published as APIs ([[prompt_api]])")
    actions = cmd.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="each prompt API: path, model, routes, input and output schemas (JSON)")
    actions.add_parser("openapi", help="the published prompt APIs as an OpenAPI 3.1 document (JSON)")
    for leaf in actions.choices.values():
        leaf.add_argument("--config", help="the gateway config (default: the built-in quickstart)")


def prompt_apis(args: argparse.Namespace) -> int:
    # Imported here: the prompt API handler and its budgets (~0.5 MiB) would otherwise be loaded by every
    # ``fastgw run``, whose workers fork from it and carry them in their RSS (tests/e2e/test_resources.py).
    from fastgw.ai.prompt_openapi import listing, openapi

    snapshot = load_config(None)[1] if args.config is None else compile_for_tools(args.config)
    apis = snapshot.sections.get("prompt_api") or {}
    if args.action == "list":
        document: Any = listing(apis, snapshot)
    else:
        document = openapi(apis, snapshot)
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    return 0
