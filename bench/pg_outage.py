"""Issue 24's outage bar: PostgreSQL killed for 30 s under load; 0 failed requests for valid cached
credentials, and the ledger's totals after recovery equal the requests served.

    python bench/pg_outage.py [--outage 30] [--before 5] [--after 10] [--workers 2] [--concurrency 16]

A real PostgreSQL (tests/support/postgres.py: initdb + pg_ctl into a temporary directory), a gateway
on it with the usage ledger (tests/support/ledger.py) in front of the fake OpenAI provider (a thread of
this process), two API-key consumers. Steady closed-loop load (``--concurrency`` keep-alive connections,
raw HTTP/1.1, bench/ledger_exact.py's client) for ``--before`` seconds, then PostgreSQL is stopped
(``pg_ctl stop -m immediate``: the server dies without a shutdown checkpoint, as a kill would leave
it) for ``--outage`` seconds and started again, and the load runs ``--after`` seconds more. Then the
ledger (``GET /usage``) is polled until it equals what the provider served, up to ``--settle`` seconds.

Prints one JSON object: requests answered 200, failed (any other status, a reset, a timeout), what the
provider served and what the ledger holds, and the seconds recovery took; exit 0 when nothing failed and
the ledger equals the requests served exactly, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ledger_exact import Client, chat_request  # noqa: E402

from tests.support.api_keys import issue  # noqa: E402
from tests.support.cluster import ADMIN_TOKEN, admin_call  # noqa: E402
from tests.support.gateways import start_gateway  # noqa: E402
from tests.support.ledger import ledger_config, postgres_store, served, start_fake  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402


class Load:
    """Closed-loop requests on keep-alive connections until ``stop``; every answer other than 200 and
    every connection error counts as a failed request."""

    def __init__(self, port: int, keys: list[str]) -> None:
        self.port, self.keys = port, keys
        self.sent = 0
        self.ok = 0
        self.failed = 0
        self.statuses: dict[int, int] = {}
        self.stop = False

    async def connection(self) -> None:
        loop = asyncio.get_running_loop()
        client: Client | None = None
        while not self.stop:
            i = self.sent
            self.sent += 1
            try:
                if client is None or client.transport is None or client.transport.is_closing():
                    _, client = await loop.create_connection(Client, "127.0.0.1", self.port)
                status = await client.request(chat_request(i, self.keys))
            except (TimeoutError, OSError, ConnectionError):
                self.failed += 1
                client = None
                continue
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                self.ok += 1
            else:
                self.failed += 1


def ledger_requests(admin: int) -> int | None:
    status, answer = admin_call(admin, "GET", "/usage")
    return sum(row["requests"] for row in answer["usage"]) if status == 200 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=30.0, help="seconds PostgreSQL is down")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load before the outage")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of load after it")
    parser.add_argument("--settle", type=float, default=60.0, help="most seconds for the ledger to catch up")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fastgw-pg-outage-"))
    secrets = work / "secrets"
    secrets.mkdir()
    (secrets / "admin.token").write_text(ADMIN_TOKEN + "\n")
    (secrets / "pepper").write_text(os.urandom(32).hex())
    postgres = PostgresServer()
    fake = start_fake()
    fake.first_token_delay = 0.0
    admin = free_port()
    config = ledger_config(fake.port, admin, secrets) + postgres_store(secrets, postgres.create_database())
    gw = start_gateway(work, config, workers=args.workers)
    report: dict[str, Any] = {"outage_seconds": args.outage, "workers": args.workers}
    try:
        load = Load(gw.port, [issue(gw, "acme")[0], issue(gw, "zeta")[0]])

        async def drive() -> None:
            loop = asyncio.get_running_loop()
            tasks = [asyncio.ensure_future(load.connection()) for _ in range(args.concurrency)]
            await asyncio.sleep(args.before)
            # pg_ctl blocks: off the loop, so the load goes on meanwhile.
            await loop.run_in_executor(None, lambda: postgres.stop(mode="immediate"))
            report["served_before_outage"] = load.ok
            await asyncio.sleep(args.outage)
            report["served_during_outage"] = load.ok - report["served_before_outage"]
            await loop.run_in_executor(None, postgres.start)
            await asyncio.sleep(args.after)
            load.stop = True
            await asyncio.gather(*tasks)

        asyncio.run(drive())
        stopped = time.monotonic()
        provider = sum(t["requests"] for t in served(fake).values())
        ledger = ledger_requests(admin)
        while ledger != provider and time.monotonic() - stopped < args.settle:
            time.sleep(0.5)
            ledger = ledger_requests(admin)
        report |= {
            "requests_ok": load.ok,
            "requests_failed": load.failed,
            "statuses": load.statuses,
            "provider_served": provider,
            "ledger_requests": ledger,
            "seconds_to_settle_after_load": round(time.monotonic() - stopped, 1),
            "gateway_exit": gw.stop(),
        }
    finally:
        if gw.proc.poll() is None:
            gw.stop()
        fake.stop_thread()
        postgres.close()
    report["bar_met"] = report["requests_failed"] == 0 and report["ledger_requests"] == report["requests_ok"]
    report["bar_met"] = report["bar_met"] and report["provider_served"] == report["requests_ok"]
    print(json.dumps(report, indent=2))
    return 0 if report["bar_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
