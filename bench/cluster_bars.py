"""Issue 24's cluster bars, full size, on this machine: one real PostgreSQL (initdb + pg_ctl in a temp
directory), ``--nodes`` gateways of ``--workers`` workers each sharing it, a small test upstream.

    .venv/bin/python bench/cluster_bars.py                                # the bars: 100 trials, 1,000 ops
    .venv/bin/python bench/cluster_bars.py --trials 3 --operations 10 --nodes 2 --workers 1   # a smoke run

1. Revocation: a key revoked through node A's admin API, the time until every worker of node B refuses
   it; bar: p99 <= 1 s over ``--trials`` (100).
2. Churn: ``--operations`` (1,000) key creations and revocations through random nodes' admin APIs while
   a traffic thread presents issued keys to random nodes; bar: every node's view equals the database at
   the end, and no request with a revoked key succeeds more than 1 s after the revocation.

Prints one line per bar and a JSON summary; exit status 0 when both bars hold. Needs PostgreSQL's server
binaries (Debian's postgresql package), as the tests do. Uses tests/support (run from a checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.cluster import cluster_config  # noqa: E402
from tests.support.cluster_bars import (  # noqa: E402
    BAR_SECONDS,
    Node,
    churn,
    describe_times,
    p99,
    revocation_times,
)
from tests.support.gateways import Gateway, start_gateway  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.upstreams import TestUpstream  # noqa: E402

ADMIN_TOKEN = "admin-token-for-keys-tests-0c5e9a7d31f4"  # what tests/support/cluster.py authenticates with


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=100, help="revocation trials (bar: 100)")
    parser.add_argument("--operations", type=int, default=1000, help="creations and revocations (bar: 1,000)")
    args = parser.parse_args()
    if args.nodes < 2:
        parser.error("--nodes must be at least 2 (a revocation goes from one node to another)")
    work = Path(tempfile.mkdtemp(prefix="fastgw-cluster-bars-"))
    secrets = work / "secrets"
    secrets.mkdir()
    (secrets / "admin.token").write_text(ADMIN_TOKEN + "\n")
    (secrets / "pepper").write_bytes(os.urandom(32).hex().encode())
    server = PostgresServer()
    upstream = TestUpstream()
    gateways: list[Gateway] = []
    try:
        dsn = server.create_database()
        nodes = []
        for i in range(args.nodes):
            admin = free_port()
            body = cluster_config(upstream.port, admin, secrets, dsn)
            gateways.append(start_gateway(work, body, name=f"node{i}", workers=args.workers))
            nodes.append(Node(gateways[-1].port, admin))
        times = revocation_times(nodes[0], nodes[1], args.trials)
        revocation_ok = p99(times) <= BAR_SECONDS
        print(f"revocation: {describe_times(times)}: {'ok' if revocation_ok else 'FAILS'} (bar p99 <= 1 s)")
        result = churn(nodes, dsn, args.operations)
        churn_ok = not result.violations and not result.mismatches
        print(f"churn: {result.summary()}: {'ok' if churn_ok else 'FAILS'}")
        for line in (result.violations + result.mismatches)[:20]:
            print("  " + line)
        summary = {
            "nodes": args.nodes,
            "workers": args.workers,
            "revocation_p99_ms": round(1000 * p99(times), 1),
            "revocation_max_ms": round(1000 * max(times), 1),
            "trials": args.trials,
            "operations": args.operations,
            "keys": len(result.keys),
            "revoked": len(result.revoked_at),
            "requests": result.requests,
            "late_refusals": len(result.violations),
            "view_mismatches": len(result.mismatches),
        }
        print(json.dumps(summary))
        return 0 if revocation_ok and churn_ok else 1
    finally:
        for gw in gateways:
            gw.stop()
        upstream.close()
        server.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
