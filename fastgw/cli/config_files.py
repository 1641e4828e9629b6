"""Reading a config for a command (the built-in quickstart when none is named), and the commands that only
read configs: ``check`` (validate and summarise) and ``diff``.

``check`` and ``run`` validate through the same function (config/validate.py). With no CONFIG, ``run``
serves the quickstart shipped inside the package, so it works from an installed wheel.
"""

from __future__ import annotations

import argparse
from importlib import resources

from fastgw.config.compiler import compile_config
from fastgw.config.loader import read_config_bytes
from fastgw.config.validate import load, validate
from fastgw.snapshot import Snapshot

QUICKSTART = "quickstart.toml"


def quickstart() -> tuple[bytes, str]:
    data = resources.files("fastgw").joinpath("data", QUICKSTART).read_bytes()
    return data, f"<built-in {QUICKSTART}>"


def load_config(path: str | None, workers: int | None = None) -> tuple[bytes, Snapshot]:
    """The config validated as ``check`` and ``run`` both validate it."""
    if path is None:
        data, name = quickstart()
        return data, validate(data, name, workers=workers)
    return load(path, workers=workers)


def compile_for_tools(path: str) -> Snapshot:
    """The config as the tools beside a running gateway need it (audit verify, keys, consumers): compiled,
    without the checks only a gateway about to start needs (secrets of the control process, memory)."""
    return compile_config(read_config_bytes(path), path)


def check(args: argparse.Namespace) -> int:
    """``fastgw check CONFIG``: validate as ``run`` would, then print what the config serves."""
    print(_summary(load_config(args.config)[1]))
    return 0


def _summary(snapshot: Snapshot) -> str:
    http2 = "on" if snapshot.http2.enabled else "off"
    lines = [
        f"config OK: {snapshot.source} (snapshot {snapshot.id}, http1={snapshot.server.http1}, http2={http2})"
    ]
    for ls in snapshot.listeners:
        extra = " proxy_protocol" if ls.proxy_protocol else ""
        lines.append(f"  listener {ls.name}: {ls.host}:{ls.port}{extra}")
    for up in snapshot.upstreams.values():
        targets = ", ".join(t.label for t in up.targets)
        lines.append(f"  upstream {up.name}: {targets} ({up.balance})")
    for route in snapshot.routes:
        chain = ", ".join(p.name + (" (shadow)" if p.shadow else "") for p in route.chain) or "-"
        served = route.upstream.name if route.handler is None else f"({route.kind})"
        lines.append(f"  route {route.name} -> {served}; policies: {chain}")
    if snapshot.demo_upstream is not None:
        lines.append(f"  demo upstream: {snapshot.demo_upstream[0]}:{snapshot.demo_upstream[1]}")
    redis = snapshot.ratelimit_redis
    if redis is not None:
        host = redis.url.split("@")[-1].split("//")[-1]  # never the password
        every = f"flush {redis.flush_interval:g}s, fail {redis.failure}"
        lines.append(f"  rate limits shared through redis {host} ({every})")
    lines.extend(f"  warning: {w}" for w in snapshot.warnings)
    return "\n".join(lines)


def diff(args: argparse.Namespace) -> int:
    from fastgw.config.diff import diff_configs

    lines = diff_configs(args.old, args.new)
    print("\n".join(lines) if lines else "no differences in routes, upstreams, listeners or policies")
    return 1 if lines else 0
