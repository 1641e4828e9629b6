"""Which modules ``pip install`` compiles to C with mypyc, and whether this process runs them compiled.

fastgw is written and checked as plain Python (``mypy --strict``). The modules below, the per-request
path, are also compiled by mypyc when the package is installed
(``setup.py``): the same source, run as C extension modules, costs less CPU per request (docs/performance.md,
"Compiled hot path"). Python imports an extension module in preference to its ``.py``, so a source file edited
after the install is not what runs until the package is built again: ``status`` tells, the test suite
refuses to run on a stale build, and ``scripts/dev.sh`` rebuilds.

Only the standard library is imported here: ``setup.py`` reads ``COMPILED`` before fastgw's
dependencies are installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Final

COMPILED: Final = (
    "fastgw.exchange",
    "fastgw.proxy_headers.hop_by_hop",
    "fastgw.proxy_headers.request_ids",
    "fastgw.proxy_headers.request_head",
    "fastgw.proxy_headers.response_head",
    "fastgw.proxy_headers.answer",
    "fastgw.router",
    "fastgw.codec.framing",
    "fastgw.codec.serialize",
    "fastgw.codec.path",
    "fastgw.codec.http1_httptools",
    "fastgw.codec.sse",
    "fastgw.proxy.dispatch",
    "fastgw.proxy.http1_response",
    "fastgw.proxy.http1_deadlines",
    "fastgw.proxy.http1",
    "fastgw.proxy.upstream_call",
    "fastgw.upstream.write_batch",
    "fastgw.upstream.response_reader",
    "fastgw.upstream.connection",
    "fastgw.upstream.pool",
    "fastgw.policy.chain",
    "fastgw.policy.api_key",
    "fastgw.policy.identity",
    "fastgw.policy.throttle",
    "fastgw.counters.windows",
    "fastgw.counters.table",
    "fastgw.counters.algorithms",
    "fastgw.counters.cluster_slot",  # CLUSTER.current, read per request by rate limits and budgets
    "fastgw.counters.quota",  # day and month periods: quotas' and the LLM budgets' per-request calls
    "fastgw.counters.allowance",  # the LLM budgets' per-request reserve and settle
    "fastgw.policy.rate_limit",
    "fastgw.metrics.worker",
    "fastgw.metrics.llm",  # per llm exchange, in the tick: its tokens and timings
    "fastgw.metrics.llm_spend",
    "fastgw.sinks.ledger_book",  # per llm exchange, in the tick: the usage ledger's sums
    "fastgw.access_line",
    "fastgw.verdict",
    "fastgw.route",
    "fastgw.snapshot",
    "fastgw.proxy.context",
    "fastgw.process.worker",
    "fastgw.proxy.handler",
    "fastgw.proxy.handler_links",
    "fastgw.proxy.client",
    "fastgw.ai.provider_calls",
    # The llm handler, its target loop and the relay of each answer. Compiled modules never await in an
    # except or finally block: tests/test_native.py says why.
    "fastgw.ai.attempts",
    "fastgw.ai.relay",
    "fastgw.ai.handler",
    "fastgw.ai.routing",
    "fastgw.ai.capabilities",  # per request: what the target cannot honour
    "fastgw.policy.model_grants",  # per request: the models the caller may use
    "fastgw.ai.record",
    "fastgw.ai.prices",  # every llm request is priced when it ends (record_cost)
    "fastgw.ai.budget_headers",
    "fastgw.ai.budget_seats",
    "fastgw.ai.budgets",
    "fastgw.ai.adapter",
    "fastgw.ai.formats.openai",
    "fastgw.ai.formats.openai_checks",
    "fastgw.ai.formats.openai_format",
    "fastgw.ai.providers.openai",
    "fastgw.ai.providers.azure_openai",  # its adapter and stream extend the OpenAI ones (compiled)
    # Guardrails: a route's detectors scan each prompt; their loops and windows cost more interpreted than
    # the regex engine's work (mask + restore on 2 KiB: about 80 us interpreted, 44 us compiled).
    "fastgw.ai.guardrails.folding",
    "fastgw.ai.guardrails.scan",
    "fastgw.ai.guardrails.detectors",
    "fastgw.ai.guardrails.masking",
)
_PACKAGE: Final = Path(__file__).resolve().parent


def source_paths() -> list[str]:
    """COMPILED as paths relative to the project root (what mypyc is given)."""
    return [name.replace(".", "/") + ".py" for name in COMPILED]


def leftovers() -> list[Path]:
    """Extension files in the package for modules no longer compiled: they would shadow their source."""
    found = []
    for path in _PACKAGE.rglob("*.so"):
        module = ".".join(("fastgw", *path.relative_to(_PACKAGE).parts[:-1], path.name.split(".", 1)[0]))
        if module not in COMPILED:
            found.append(path)
    return found


def status() -> dict[str, str]:
    """Each compiled module's state here: "compiled", "source" (no extension: pure Python) or "stale"
    (the extension is older than the source next to it, or is left from a module no longer compiled)."""
    states: dict[str, str] = {}
    for name in COMPILED:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is None or origin.endswith(".py"):
            states[name] = "source"
            continue
        source = os.path.join(os.path.dirname(origin), name.rpartition(".")[2] + ".py")
        fresh = not os.path.exists(source) or os.path.getmtime(source) <= os.path.getmtime(origin)
        states[name] = "compiled" if fresh else "stale"
    for path in leftovers():
        states[str(path.relative_to(_PACKAGE.parent))] = "stale"
    return states


def main(argv: list[str]) -> int:
    """``python -m fastgw.native [--clean]``: print each module's state, exit 1 if any is stale;
    ``--clean`` first deletes extensions left from modules no longer compiled."""
    if "--clean" in argv:
        for path in leftovers():
            path.unlink()
    states = status()
    for name, state in states.items():
        print(f"{state:8} {name}")
    return 1 if "stale" in states.values() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
