"""fastgw vs nginx, side by side in one run, reported as ratios.

    scripts/dev.sh bench            # full run (~7 min): 5 runs x 8 s per scenario and target
    scripts/dev.sh bench --quick    # ~1 min: 3 runs x 2 s, for commit-message deltas

An nginx upstream (``return 200`` with a 100-byte body, and a 64 KiB file) runs pinned to CPU 1 with wrk.
fastgw (access log on, to a file) and nginx as a reverse proxy (1 worker, keep-alive upstream pool, access
log off) both run pinned to CPU 0; the runs alternate between them so drift hits both alike. Each scenario
reports the median req/s, p50 and p99 of its runs, the fastgw/nginx ratio, the spread (max-min over
median) and the range of the run pairs' ratios (each fastgw run over the nginx run before it). Results
are written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
BODY_100 = "x" * 100


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    connections: int
    script: str = ""  # wrk Lua
    headers: tuple[str, ...] = ()
    tls: bool = False
    h2: bool = False  # h2c with prior knowledge, driven by h2load -c N -m 10


SCENARIOS = [
    Scenario("small GET keep-alive c=64", "/small", 64),
    Scenario("small GET c=16 (latency)", "/small", 16),
    Scenario(
        "POST 4 KiB c=64",
        "/small",
        64,
        script='wrk.method = "POST"\nwrk.body = string.rep("a", 4096)\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n',
    ),
    Scenario("small GET + API key c=64", "/keyed/small", 64, headers=("X-API-Key: {api_key}",)),
    Scenario("small GET + JWT RS256 c=64", "/jwt/small", 64, headers=("Authorization: Bearer {jwt}",)),
    Scenario(
        "full chain: API key + GCRA + sliding limit c=64",
        "/chain/small",
        64,
        headers=("X-API-Key: {api_key}",),
    ),
    Scenario("64 KiB response c=64", "/64k", 64),
    Scenario("new connection per request c=16", "/small", 16, headers=("Connection: close",)),
    Scenario("HTTPS small GET keep-alive c=64", "/small", 64, tls=True),
    Scenario("new TLS connection per request c=16", "/small", 16, headers=("Connection: close",), tls=True),
    Scenario("h2c small GET c=16 m=10", "/small", 16, h2=True),
]


API_KEY = [""]  # issued through the admin API once the gateway runs
KEY_BY_PORT: dict[int, str] = {}  # with --store both each gateway has its own store, so its own key
JWT = [""]  # an RS256 token from the bench's own key pair


def make_jwt_key(work: Path) -> Path:
    """An RS256 key pair: the public half for the gateway config, a long-lived token for wrk."""
    import time

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = work / "jwt-public.pem"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, spki))
    claims = {"iss": "https://bench/", "aud": "bench", "sub": "bench", "exp": int(time.time()) + 86400}
    JWT[0] = jwt.encode(claims, key, algorithm="RS256")
    return pem


def issue_api_key(admin_port: int, token: str) -> str:
    """Create a consumer and a key on the running gateway, as an operator would."""
    import json
    import urllib.request

    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    post("/consumers", {"name": "bench"})
    return str(post("/keys", {"consumer": "bench"})["key"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not found or not shutil.which("wrk") or not shutil.which("h2load"):
        raise SystemExit(
            "bench needs wrk, h2load and nginx: run `scripts/dev.sh system bench` "
            "(apt-get install -y wrk nghttp2-client nginx)"
        )
    return found


def nginx_conf(work: Path, name: str, server_block: str) -> Path:
    user = "user root;" if os.geteuid() == 0 else ""
    temp = work / f"{name}-tmp"
    temp.mkdir(exist_ok=True)
    conf = work / f"{name}.conf"
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 1000000;
    {server_block}
}}
""")
    return conf


def start(cmd: list[str], cpu: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", str(cpu), *cmd], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def parse_wrk(output: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
    }


def run_wrk(port: int, scenario: Scenario, duration: int, work: Path) -> dict[str, float]:
    scheme = "https" if scenario.tls else "http"
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{scenario.connections}", f"-d{duration}s", "--latency"]
    for header in scenario.headers:
        cmd += ["-H", header.replace("{api_key}", KEY_BY_PORT.get(port, API_KEY[0])).replace("{jwt}", JWT[0])]
    if scenario.script:
        script = work / f"wrk-{abs(hash(scenario.name))}.lua"
        script.write_text(scenario.script)
        cmd += ["-s", str(script)]
    cmd.append(f"{scheme}://127.0.0.1:{port}{scenario.path}")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise SystemExit(f"wrk failed: {out.stderr}")
    return parse_wrk(out.stdout)


def run_h2load(port: int, scenario: Scenario, duration: int) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", "h2load", "-t1", f"-c{scenario.connections}", "-m10", f"-D{duration}"]
    for header in scenario.headers:
        cmd += ["-H", header.replace("{api_key}", KEY_BY_PORT.get(port, API_KEY[0])).replace("{jwt}", JWT[0])]
    cmd.append(f"http://127.0.0.1:{port}{scenario.path}")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise SystemExit(f"h2load failed: {out.stderr or out.stdout}")
    return parse_h2load(out.stdout)


def parse_h2load(output: str) -> dict[str, float]:
    """h2load prints req/s and the mean time per request (no percentiles): the mean stands in for p50."""
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output).group(1))  # type: ignore[union-attr]
    m = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", output)
    mean = float("nan")
    if m:
        value, unit = float(m.group(1)), m.group(2)
        mean = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    failed = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed", output)
    status = re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    bad = float(failed.group(1)) if failed else 0.0
    if status:
        bad += sum(float(g) for g in status.groups())
    return {"rps": rps, "p50_ms": mean, "p99_ms": float("nan"), "non_2xx": bad, "socket_errors": 0.0}


def summarize(runs: list[dict[str, float]]) -> dict[str, object]:
    rps = [r["rps"] for r in runs]
    median = statistics.median(rps)
    return {
        "runs": runs,
        "rps": median,
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "spread_pct": (max(rps) - min(rps)) / median * 100 if median else 0.0,
        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
    }


def store_comparison(
    sqlite_runs: list[dict[str, float]], pg_runs: list[dict[str, float]]
) -> dict[str, object]:
    """Issue 24's bar: the store on PostgreSQL adds nothing to the request path, i.e. the PostgreSQL
    gateway's median req/s lies inside the range of the SQLite gateway's runs (measured alternately)."""
    sqlite_rps = [r["rps"] for r in sqlite_runs]
    pg_median = statistics.median(r["rps"] for r in pg_runs)
    return {
        "pg_ratio": pg_median / statistics.median(sqlite_rps) if sqlite_rps else 0.0,
        "pg_inside_sqlite_spread": min(sqlite_rps) <= pg_median <= max(sqlite_rps),
    }


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 runs x 2 s (about a minute)")
    parser.add_argument("--runs", type=int, help="runs per scenario and target")
    parser.add_argument("--duration", type=int, help="seconds per run")
    parser.add_argument(
        "--only", help="run only scenarios whose name contains this text (several: separated by |)"
    )
    parser.add_argument("--no-log", action="store_true", help="fastgw with the access log off")
    parser.add_argument("--http1", default="httptools", choices=["httptools", "h11"])
    parser.add_argument(
        "--no-batch-writes",
        action="store_true",
        help="fastgw with server.batch_writes = false (each write made at once: what batching buys)",
    )
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also measure the bare uvloop+httptools proxy floor (keep-alive GET scenarios)",
    )
    parser.add_argument(
        "--store",
        default="sqlite",
        choices=["sqlite", "postgres", "both"],
        help="fastgw's [store]: both = a second fastgw on a temporary PostgreSQL, measured alongside"
        " (target fastgw-pg), to check the store adds nothing to the request path",
    )
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 5)
    duration = args.duration or (2 if args.quick else 8)
    nginx = nginx_binary()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("bench needs 2 CPUs: the gateway on CPU 0, wrk and the upstream on CPU 1")

    work = Path(tempfile.mkdtemp(prefix="fastgw-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    postgres: Any = None
    try:
        (work / "64k").write_bytes(b"y" * 65536)
        up_port, ngx_port, gw_port, bare_port = free_port(), free_port(), free_port(), free_port()
        ngx_tls_port, gw_tls_port = free_port(), free_port()
        ngx_h2c_port, floor_port = free_port(), free_port()
        admin_port = free_port()
        admin_token = os.urandom(16).hex()
        (work / "admin.token").write_text(admin_token)
        (work / "pepper").write_text(os.urandom(32).hex())
        jwt_pem = make_jwt_key(work)
        from fastgw.tls.dev_certs import write_dev_certificates

        certs = write_dev_certificates(work / "certs")  # one certificate for both, ECDSA P-256
        up_conf = nginx_conf(
            work,
            "upstream",
            f"""
    server {{
        listen 127.0.0.1:{up_port} backlog=4096;
        location = /small {{ default_type text/plain; return 200 "{BODY_100}"; }}
        location = /64k {{ default_type application/octet-stream; alias {work}/64k; }}
    }}""",
        )
        procs.append(start([nginx, "-c", str(up_conf)], 1, work / "upstream.out"))
        proxy_conf = nginx_conf(
            work,
            "proxy",
            f"""
    upstream backend {{ server 127.0.0.1:{up_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ngx_port} backlog=4096;
        listen 127.0.0.1:{ngx_tls_port} ssl backlog=4096;
        listen 127.0.0.1:{ngx_h2c_port} http2 backlog=4096;
        http2_max_requests 1000000;
        ssl_certificate {certs.server_cert};
        ssl_certificate_key {certs.server_key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
        location /jwt/ {{
            proxy_pass http://backend/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
        location /chain/ {{
            proxy_pass http://backend/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
        location /keyed/ {{
            proxy_pass http://backend/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}""",
        )
        procs.append(start([nginx, "-c", str(proxy_conf)], 0, work / "proxy.out"))
        log_target = "off" if args.no_log else str(work / "access.log")
        pg_store = ""
        if args.store != "sqlite":
            from tests.support.postgres import PostgresServer  # initdb + pg_ctl into a temporary directory

            postgres = PostgresServer()
            (work / "store.dsn").write_text(postgres.create_database())
            pg_store = f'[store]\nbackend = "postgres"\ndsn = {{ file = "{work / "store.dsn"}" }}\n'

        def gw_config(name: str, gw_port: int, gw_tls_port: int, admin_port: int, store: str) -> Path:
            gw_conf = work / f"{name}.toml"
            gw_conf.write_text(f"""
[server]
http1 = "{args.http1}"
batch_writes = {"false" if args.no_batch_writes else "true"}
max_connections_per_ip = 100000
[[listeners]]
bind = "127.0.0.1:{gw_port}"
backlog = 4096
[[listeners]]
name = "https"
bind = "127.0.0.1:{gw_tls_port}"
backlog = 4096
tls = {{ certificates = [{{ cert = "{certs.server_cert}", key = "{certs.server_key}" }}] }}
[access_log]
target = "{log_target}"
[upstreams.backend]
targets = ["127.0.0.1:{up_port}"]
max_idle = 256
[[routes]]
name = "bench"
path = "/"
upstream = "backend"
auth = "none"
[[routes]]
name = "keyed"
path = "/keyed"
strip_prefix = true
upstream = "backend"
auth = "api_key"
[[routes]]
name = "chain"
path = "/chain"
strip_prefix = true
upstream = "backend"
auth = "api_key"
limits = [
  {{ name = "burst", rate = 100000000, per = 1.0, key = "consumer", algorithm = "gcra", burst = 1000 }},
  {{ name = "daily", rate = 1000000000, per = 86400.0, key = "consumer" }},
]
[[routes]]
name = "jwt"
path = "/jwt"
strip_prefix = true
upstream = "backend"
auth = "jwt"
[jwt.issuers.bench]
issuer = "https://bench/"
audiences = ["bench"]
algorithms = ["RS256"]
public_keys = ["{jwt_pem}"]
[admin]
bind = "127.0.0.1:{admin_port}"
token = {{ file = "{work / "admin.token"}" }}
[keys]
pepper = {{ file = "{work / "pepper"}" }}
[state]
dir = "{work / name}-state"
{store}""")
            return gw_conf

        gateways = {"fastgw": (gw_port, gw_tls_port, admin_port)}
        if args.store == "both":
            gateways["fastgw-pg"] = (free_port(), free_port(), free_port())
        for name, (port, tls_port, admin) in gateways.items():
            store = pg_store if name == "fastgw-pg" or args.store == "postgres" else ""
            gw_cmd = [
                sys.executable,
                "-m",
                "fastgw",
                "run",
                str(gw_config(name, port, tls_port, admin, store)),
            ]
            # supervisor, control and the worker on CPU 0
            procs.append(start([*gw_cmd, "--workers", "1"], 0, work / f"{name}.out"))
        procs.append(
            start(
                [sys.executable, str(ROOT / "bench" / "bare_proxy.py"), str(bare_port), str(up_port)],
                0,
                work / "bare.out",
            )
        )
        procs.append(
            start(
                [sys.executable, str(ROOT / "bench" / "h2_floor.py"), str(floor_port)], 0, work / "floor.out"
            )
        )
        ports_up = (
            up_port,
            ngx_port,
            gw_port,
            bare_port,
            ngx_tls_port,
            gw_tls_port,
            admin_port,
            ngx_h2c_port,
        )
        for port in (*ports_up, floor_port, *(p for ports in gateways.values() for p in ports)):
            wait_port(port)
        for port, tls_port, admin in gateways.values():
            KEY_BY_PORT[port] = KEY_BY_PORT[tls_port] = issue_api_key(admin, admin_token)
        API_KEY[0] = KEY_BY_PORT[gw_port]

        targets = {"nginx": ngx_port, "fastgw": gw_port}
        if args.bare:
            targets["bare"] = bare_port
        results: dict[str, dict[str, object]] = {}
        wanted = args.only.split("|") if args.only else []
        scenarios = [s for s in SCENARIOS if not wanted or any(w in s.name for w in wanted)]
        tls_targets = {"nginx": ngx_tls_port, "fastgw": gw_tls_port}  # the bare floor speaks no TLS
        # fastgw serves h2c (prior knowledge) on its plain listener; the floor is bench/h2_floor.py
        h2_targets = {"nginx": ngx_h2c_port, "fastgw": gw_port, "bare": floor_port}
        if "fastgw-pg" in gateways:
            pg_port, pg_tls_port, _ = gateways["fastgw-pg"]
            targets["fastgw-pg"], tls_targets["fastgw-pg"], h2_targets["fastgw-pg"] = (
                pg_port,
                pg_tls_port,
                pg_port,
            )
        for scenario in scenarios:
            ports = h2_targets if scenario.h2 else tls_targets if scenario.tls else targets

            def measure(port: int, seconds: int, scenario: Scenario = scenario) -> dict[str, float]:
                if scenario.h2:
                    return run_h2load(port, scenario, seconds)
                return run_wrk(port, scenario, seconds, work)

            for port in ports.values():  # warm-up: pools filled, caches hot
                measure(port, 1)
            per_target: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
            for _ in range(runs):
                for name, port in ports.items():
                    per_target[name].append(measure(port, duration))
            summary = {name: summarize(r) for name, r in per_target.items()}
            ng, fg = summary["nginx"], summary["fastgw"]
            extra = {}
            if "bare" in summary:
                extra["bare_ratio"] = summary["bare"]["rps"] / ng["rps"] if ng["rps"] else 0.0  # type: ignore[operator]
                bare_rps = summary["bare"]["rps"]
                extra["floor_ratio"] = fg["rps"] / bare_rps if bare_rps else 0.0  # type: ignore[operator]
            if "fastgw-pg" in summary:
                extra |= store_comparison(per_target["fastgw"], per_target["fastgw-pg"])
            results[scenario.name] = {
                **summary,
                **extra,
                "ratio": fg["rps"] / ng["rps"] if ng["rps"] else 0.0,  # type: ignore[operator]
                "p50_ratio": fg["p50_ms"] / ng["p50_ms"] if ng["p50_ms"] else 0.0,  # type: ignore[operator]
                # Each fastgw run over the nginx run just before it: how far one run's ratio can stray on
                # this machine (the ratio above is of the medians).
                "pair_ratios": [
                    f["rps"] / n["rps"]
                    for n, f in zip(per_target["nginx"], per_target["fastgw"], strict=True)
                    if n["rps"]
                ],
            }
            print_row(scenario.name, results[scenario.name])
        report = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "runs": runs,
            "duration_s": duration,
            "fastgw": {
                "access_log": not args.no_log,
                "http1": args.http1,
                "batch_writes": not args.no_batch_writes,
                "store": args.store,
            },
            "scenarios": results,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
        out.write_text(json.dumps(report, indent=2))
        print(f"\nwritten {out.relative_to(ROOT)}")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM if proc.args[3:4] != [nginx] else signal.SIGQUIT)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if postgres is not None:
            postgres.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


_HEADER_PRINTED = False


def print_row(name: str, result: dict[str, object]) -> None:
    global _HEADER_PRINTED
    if not _HEADER_PRINTED:
        print(
            f"{'scenario':34} {'nginx req/s':>12} {'fastgw req/s':>13} {'ratio':>6}  "
            f"{'nginx p50/p99 ms':>17}  {'fastgw p50/p99 ms':>18}  spread n/f  run pairs"
        )
        _HEADER_PRINTED = True
    ng = result["nginx"]
    fg = result["fastgw"]
    assert isinstance(ng, dict) and isinstance(fg, dict)
    bare = result.get("bare")
    floor = (
        f"  bare {bare['rps']:.0f} ({result['bare_ratio']:.2f}x nginx;"
        f" fastgw {result['floor_ratio']:.2f}x bare)"
        if isinstance(bare, dict)
        else ""
    )
    pg = result.get("fastgw-pg")
    if isinstance(pg, dict):
        inside = "inside" if result["pg_inside_sqlite_spread"] else "OUTSIDE"
        floor += f"  fastgw-pg {pg['rps']:.0f} ({result['pg_ratio']:.2f}x sqlite: {inside} its spread)"
    pairs = result.get("pair_ratios")
    span = f"  {min(pairs):.2f}-{max(pairs):.2f}" if isinstance(pairs, list) and pairs else ""
    print(
        f"{name:34} {ng['rps']:12.0f} {fg['rps']:13.0f} {result['ratio']:6.2f}  "
        f"{ng['p50_ms']:8.2f}/{ng['p99_ms']:<8.2f}  {fg['p50_ms']:9.2f}/{fg['p99_ms']:<8.2f}  "
        f"{ng['spread_pct']:.0f}%/{fg['spread_pct']:.0f}%{span}{floor}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
