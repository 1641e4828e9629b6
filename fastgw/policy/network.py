"""Network rules: IP allow/deny lists (CIDR, IPv4 and IPv6) and the trusted-proxy view of the client.

The first phase of every chain. Deny wins over allow; a non-empty allow list admits only its networks.
Verdicts are cached per client address in a bounded dict, so the ``ipaddress`` parse (~1 us) is paid once
per address rather than per request. The client address is the socket peer, or the PROXY protocol source,
or -- only when the peer is a configured trusted proxy -- the right-most ``X-Forwarded-For`` entry that is
not itself a trusted proxy (everything left of it was written by parties we cannot trust).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

from fastgw.codec.ip_literal import is_ip_literal
from fastgw.config.context import CompileContext
from fastgw.config.fields import Section, doc
from fastgw.exchange import Exchange
from fastgw.policy.chain import Denial, Phase
from fastgw.snapshot import IPNetwork


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSpec:
    allow: tuple[str, ...] = doc("CIDRs admitted; empty admits every address not denied", ())
    deny: tuple[str, ...] = doc("CIDRs refused with 403; deny wins over allow", ())
    mode: Literal["enforce", "shadow"] = doc("shadow logs would-denials and lets requests pass", "enforce")


_CACHE_MAX: Final = 8192  # distinct client addresses remembered per policy before the cache is reset


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDR strings (a bare address means a single host). Raises ValueError with the bad value."""
    nets: list[IPNetwork] = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    return tuple(nets)


def in_networks(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def client_from_forwarded(xff: bytes, trusted: tuple[IPNetwork, ...]) -> str | None:
    """The right-most X-Forwarded-For entry that is not a trusted proxy, or None if there is none."""
    for entry in reversed(xff.split(b",")):
        candidate = entry.strip().decode("latin-1")
        if not candidate:
            continue
        if not is_ip_literal(candidate):
            return None  # garbage from an untrusted hop: fall back to the peer
        if not in_networks(candidate, trusted):
            return candidate
    return None


class NetworkRules:
    """IP allow/deny for the whole gateway or one route."""

    PHASE: ClassVar[Phase] = Phase.CONNECTION
    __slots__ = ("_allow", "_cache", "_deny", "name", "shadow")

    def __init__(
        self, name: str, allow: tuple[IPNetwork, ...], deny: tuple[IPNetwork, ...], shadow: bool
    ) -> None:
        self.name = name
        self.shadow = shadow
        self._allow = allow
        self._deny = deny
        self._cache: dict[str, Denial | None] = {}

    def check(self, ex: Exchange) -> Denial | None:
        address = ex.client_ip
        try:
            return self._cache[address]
        except KeyError:
            pass
        verdict = self._decide(address)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[address] = verdict
        return verdict

    def _decide(self, address: str) -> Denial | None:
        if self._deny and in_networks(address, self._deny):
            return Denial(403, "forbidden", "client address is denied", f"{self.name}.deny")
        if self._allow and not in_networks(address, self._allow):
            return Denial(403, "forbidden", "client address is not allowed", f"{self.name}.not_allowed")
        return None


def networks(ctx: CompileContext, key: str, values: Sequence[str]) -> tuple[IPNetwork, ...]:
    """Parse a config list of CIDRs; the error names the bad entry's index."""
    for i, value in enumerate(values):
        try:
            parse_networks([value])
        except ValueError as exc:
            raise ctx.error(f"{key}[{i}]", str(exc)) from None
    return parse_networks(values)


def rules(ctx: CompileContext, key: str, spec: NetworkSpec, name: str) -> NetworkRules | None:
    allow = networks(ctx, f"{key}.allow", spec.allow)
    deny = networks(ctx, f"{key}.deny", spec.deny)
    if not allow and not deny:
        return None
    return NetworkRules(name, allow, deny, spec.mode == "shadow")


def compile(spec: NetworkSpec, ctx: CompileContext) -> None:
    """[network]: the global rules, first in every route's chain."""
    global_rules = rules(ctx, "network", spec, "network")
    if global_rules is not None:
        ctx.global_policies.append(global_rules)


def compile_route(spec: NetworkSpec | None, ctx: CompileContext) -> tuple[NetworkRules, ...]:
    """routes.network: the route's own rules, after the global ones."""
    if spec is None:
        return ()
    route_rules = rules(ctx, f"{ctx.route_key}.network", spec, "route_network")
    return () if route_rules is None else (route_rules,)


# [network] and routes.network in the schema and the reference (policy/registry.py declares them).
SECTION = Section(
    NetworkSpec,
    "[network] global IP rules",
    "always",
    (("[network]", NetworkSpec, "Global IP rules, the first policy of every route."),),
)
ROUTE_SECTION = Section(
    NetworkSpec,
    "route-level IP rules, applied after the global ones",
    "optional",
    (("routes.network", NetworkSpec, "Route-level IP rules, applied after the global ones (same keys)."),),
)
