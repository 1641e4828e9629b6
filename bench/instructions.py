"""Instructions per request through fastgw's Python data plane, counted by callgrind: a deterministic
figure for commit deltas on a VM whose wall-clock timings move by +-15% from one run to the next.

It runs ``bench/pipeline.py`` (the real client and upstream Protocols over fake transports) under
``valgrind --tool=callgrind`` twice, with N and 6 x N requests, and divides the difference of the two
totals by 5 x N: start-up, imports and warm-up cancel out. The figure includes the pipeline's own
interpreted harness (~5,700 instructions a request: its loop and fake transport writes), the same in
every run. ``--top K`` lists the K functions with the most instructions of their own per request.

    python bench/instructions.py [--route plain|key|jwt|chain] [--no-log] [-n N] [--top K]

Needs valgrind (``apt-get install valgrind``); takes about a minute.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PIPELINE = Path(__file__).resolve().parent / "pipeline.py"


def _callgrind(out: Path, n: int, route: str, log: bool) -> int:
    """Run the pipeline under callgrind; the total instruction count (Ir) of the run."""
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(PIPELINE),
        "-n",
        str(n),
        "--route",
        route,
        *(["--log"] if log else []),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : ([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def _self_costs(path: Path) -> dict[str, int]:
    """Function -> instructions of its own, from callgrind_annotate."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: dict[str, int] = {}
    for line in text.splitlines():
        row = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)", line)
        if row and ":" in row.group(2) and "=>" not in line:
            source, _, function = row.group(2).split(" [")[0].strip().rpartition(":")
            name = f"{Path(source).name}:{function}"  # build paths differ from build to build
            costs[name] = costs.get(name, 0) + int(row.group(1).replace(",", ""))
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route", default="plain", choices=("plain", "key", "jwt", "chain"))
    parser.add_argument("--no-log", action="store_true", help="access log off")
    parser.add_argument("-n", type=int, default=2000, help="requests in the shorter run")
    parser.add_argument("--top", type=int, default=0, help="list the K costliest functions")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is missing; run as root:\n  apt-get install -y valgrind", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        short, long = Path(tmp, "short.out"), Path(tmp, "long.out")
        base = _callgrind(short, args.n, args.route, not args.no_log)
        more = _callgrind(long, 6 * args.n, args.route, not args.no_log)
        per_request = (more - base) / (5 * args.n)
        print(
            f"{per_request:,.0f} instructions per request "
            f"(route {args.route}, log {'off' if args.no_log else 'on'})"
        )
        if args.top:
            a, b = _self_costs(short), _self_costs(long)
            rows = sorted(((b.get(k, 0) - a.get(k, 0)) / (5 * args.n), k) for k in a.keys() | b.keys())
            for cost, name in reversed(rows[-args.top :]):
                print(f"{cost:10,.0f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
