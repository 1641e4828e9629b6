"""The policy registry and the compile context: what a newcomer relies on when adding a policy."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from fastgw.config.schema import ConfigSpec, RouteSpec
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Phase, run_chain
from fastgw.policy.registry import POLICIES
from fastgw.snapshot import Route

COMPILER = Path(__file__).resolve().parents[2] / "fastgw" / "config" / "compiler.py"
NETWORK_RULES = """
[[listeners]]
bind = "127.0.0.1:8080"
[upstreams.u]
targets = ["127.0.0.1:1"]
[network]
deny = ["10.0.0.0/8"]
[[routes]]
name = "r"
path = "/"
upstream = "u"
auth = "none"
"""


def test_every_registry_line_names_a_config_section_the_schema_has() -> None:
    config_keys = {f.name for f in dataclasses.fields(ConfigSpec)}
    route_keys = {f.name for f in dataclasses.fields(RouteSpec)}
    names = [entry.name for entry in POLICIES]
    assert len(names) == len(set(names))
    for entry in POLICIES:
        assert entry.compile is not None or entry.compile_route is not None, entry.name
        if entry.compile is not None:
            assert entry.section in config_keys, entry.name
        if entry.route_section:
            assert entry.route_section in route_keys, entry.name


def test_the_compiler_driver_names_no_policy() -> None:
    source = COMPILER.read_text()
    imported = set(re.findall(r"from fastgw\.policy\.(\w+) import", source))
    assert imported == {"registry"}
    for entry in POLICIES:
        assert f'"{entry.name}"' not in source, entry.name


class Refuse:
    """A policy of the test's own: refuses every request at its phase, and counts completions."""

    PHASE: ClassVar[Phase] = Phase.AUTHORIZATION
    shadow = False

    def __init__(self) -> None:
        self.name = "refuse"
        self.completed = 0

    def check(self, ex: Exchange) -> Denial | None:
        return Denial(403, "forbidden", "refused by the test", "test.refuse")

    def on_complete(self, ex: Exchange) -> None:
        self.completed += 1


def test_an_injected_policy_runs_in_phase_order_after_the_compiled_ones(
    inject_policy: Callable[..., Route],
) -> None:
    refuse = Refuse()
    route = inject_policy(refuse, config=NETWORK_RULES)
    assert [p.PHASE for p in route.chain] == sorted(p.PHASE for p in route.chain)
    assert route.chain[-1] is refuse and route.complete_hooks == (refuse,)
    blocked = Exchange(b"GET", b"/", b"1.1", [])
    blocked.client_ip = "10.1.2.3"
    index, outcome = run_chain(route.chain, blocked)
    assert isinstance(outcome, Denial) and outcome.reason == "network.deny" and index == 0
    allowed = Exchange(b"GET", b"/", b"1.1", [])
    allowed.client_ip = "192.0.2.1"
    index, outcome = run_chain(route.chain, allowed)
    assert isinstance(outcome, Denial) and outcome.reason == "test.refuse" and index == 1


def test_a_replaced_chain_holds_only_the_injected_policy(inject_policy: Callable[..., Route]) -> None:
    refuse = Refuse()
    route = inject_policy(refuse, config=NETWORK_RULES, replace=True)
    assert route.chain == (refuse,)
