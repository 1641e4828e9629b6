"""The AI gateway bench: fastgw's llm route against the bare floor, LiteLLM and Portkey, in one run.

    scripts/dev.sh bench --llm                # installs the peers once (bench/.peers), then this
    scripts/dev.sh bench --llm --quick        # 1 run x 2 s per row and target: does it work at all
    .venv/bin/python bench/llm.py --runs 5 --duration 8 --peers bench/.peers

A fast fake OpenAI provider (bench/llm_fake.py: 100 chunks per stream, each its own write) and the
load generators (wrk, and bench/llm_load.py where wrk cannot measure) run pinned to CPU 1. fastgw (one
worker, an llm route with ``auth = "api_key"``, the access log on, to a file), the bare floor
(bench/bare_proxy.py: a uvloop + httptools proxy that does nothing else), LiteLLM (``litellm
--num_workers 1``, master-key auth) and Portkey (its Node server) each run pinned to CPU 0, one at a
time under load; the runs alternate between them so drift hits all alike. ``direct`` is the fake
provider called with no gateway.

Rows, each with issue 22's bar beside it:
  chat c=64            non-streamed chat completion: req/s, p50/p99; fastgw over LiteLLM, Portkey, floor;
                       fastgw+gov (another route, a spend budget and a token limit on) over fastgw
  open loop 1000 req/s latency added over ``direct`` at p50 and p99 (bench/llm_load.py open-loop)
  streams c=16         100-chunk streams a second, OpenAI client -> OpenAI provider
  anthropic streams    the same through fastgw's Anthropic Messages API (translated both ways)
  ttfb                 time to the first streamed event, added over ``direct`` at p50 (one at a time)
  idle RSS             the fastgw worker's VmRSS before any load, AI modules loaded
and a check that every llm line in fastgw's access log carries exactly the fake's token counts.

The latency rows' client (bench/llm_load.py: open loop and ttfb) runs at real-time priority
(``chrt -f 1``) where the system allows it. It shares CPU 1 with the fake provider, which on a real
deployment runs on another machine: at normal priority the kernel (EEVDF) lets the fake finish its
100-event burst before the client it woke reads the first event, so a gateway whose first event comes
~0.15 ms after the floor's measured ~1 ms later (the fake's whole burst), and a stall of the fake
showed as the gateway's p99. The client is idle between answers, so the fake loses nothing it needs.
wrk's throughput rows keep normal priority (a saturating client at real-time priority starves the fake).
``--stream-writes batched`` has the fake write all but a stream's first event at once: the cheapest
stream to relay, which shows what per-event work costs against a floor that only copies bytes.
Results go to bench/results/llm-*.json. Peers that are not installed are listed, never skipped silently.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llm_fake import MODEL, PROMPT_TOKENS
from run import free_port, issue_api_key, machine, parse_wrk, start, summarize, wait_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CHUNKS = 100
OPEN_LOOP_RATE = 1000
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello to the bench."}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
ANTHROPIC_STREAM = {**CHAT, "max_tokens": 256, "stream": True}
PEER_KEY = "sk-bench-peer"  # the key the peers (and the fake, which ignores it) are called with
PEER_START_S = 120  # LiteLLM imports for a long while before it listens


class Target:
    """One thing under load: where it listens and what a client must send it."""

    def __init__(
        self, name: str, port: int, headers: tuple[str, ...], note: str = "", prefix: str = ""
    ) -> None:
        self.name, self.port, self.headers, self.note = name, port, headers, note
        self.prefix = prefix  # before each row's path: another route of the same gateway


def wrk(
    target: Target, path: str, body: dict[str, object], conns: int, seconds: int, work: Path
) -> dict[str, float]:
    script = work / f"wrk-{target.name}-{conns}-{len(json.dumps(body))}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines += [f'wrk.headers["{h.split(":", 1)[0]}"] = "{h.split(":", 1)[1].strip()}"' for h in target.headers]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    script.write_text("\n".join(lines) + "\n")
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script)]
    cmd.append(f"http://127.0.0.1:{target.port}{target.prefix}{path}")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise SystemExit(f"wrk failed against {target.name}: {out.stderr}")
    return parse_wrk(out.stdout)


def realtime_prefix() -> list[str]:
    """``chrt -f 1`` where this process may use it (root, or CAP_SYS_NICE), else nothing: the latency
    rows' client then runs at normal priority, and the report says so (see the module doc)."""
    chrt = shutil.which("chrt")
    if chrt is None:
        return []
    probe = subprocess.run([chrt, "-f", "1", "true"], check=False, capture_output=True)
    return [chrt, "-f", "1"] if probe.returncode == 0 else []


LATENCY_PRIORITY = realtime_prefix()


def load_tool(
    mode: str, target: Target, path: str, body: dict[str, object], args: list[str], work: Path
) -> dict[str, float]:
    body_file = work / f"body-{abs(hash(json.dumps(body)))}.json"
    body_file.write_text(json.dumps(body))
    cmd = [*LATENCY_PRIORITY, "taskset", "-c", "1", sys.executable, str(ROOT / "bench" / "llm_load.py")]
    cmd += [mode, str(target.port)]
    cmd += [path, str(body_file), *args, *target.headers]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"llm_load.py {mode} failed against {target.name}: {out.stderr[-2000:]}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


# The "fastgw+gov" target: the same gateway, another llm route with a spend budget and a token limit
# per consumer (ai/budgets.py), both far too high to refuse, the model priced so the spend is counted
# (the ledger is on for every llm route). Issue 23's bar: within 10 % of the plain route's req/s.
GOVERNED = f"""
[[llm.prices]]
provider = "fake"
model = "{MODEL}"
input = 1.0
output = 2.0
[[routes]]
name = "llm-gov"
path = "/gov/v1"
kind = "llm"
auth = "api_key"
[[routes.handler.budgets]]
name = "bench"
key = "consumer"
tokens_per_minute = 1000000000000
usd_per_day = 1000000.0
"""


def gateway_config(work: Path, port: int, admin_port: int, fake_port: int) -> Path:
    (work / "admin.token").write_text(os.urandom(16).hex())
    (work / "pepper").write_text(os.urandom(32).hex())
    conf = work / "fastgw.toml"
    conf.write_text(f"""
[server]
max_connections_per_ip = 100000
[[listeners]]
bind = "127.0.0.1:{port}"
backlog = 4096
[access_log]
target = "{work / "access.log"}"
[upstreams.fake]
targets = ["127.0.0.1:{fake_port}"]
max_idle = 256
[[llm.providers]]
name = "fake"
kind = "openai"
upstream = "fake"
base_path = "/v1"
api_key = {{ env = "BENCH_FAKE_PROVIDER_KEY" }}
[[llm.models]]
name = "{MODEL}"
targets = [{{ provider = "fake", model = "{MODEL}" }}]
[[routes]]
name = "llm"
path = "/v1"
kind = "llm"
auth = "api_key"
{GOVERNED}
[admin]
bind = "127.0.0.1:{admin_port}"
token = {{ file = "{work / "admin.token"}" }}
[keys]
pepper = {{ file = "{work / "pepper"}" }}
[state]
dir = "{work / "state"}"
""")
    return conf


def worker_pid(log: Path, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(r"worker 0 started as pid (\d+)", log.read_text(errors="replace"))
        if found:
            return int(found[-1])
        time.sleep(0.1)
    raise SystemExit("fastgw's worker did not report its pid")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_peers(
    peers: Path, fake_port: int, work: Path, procs: list[subprocess.Popen[bytes]]
) -> tuple[list[Target], list[str]]:
    """LiteLLM and Portkey where installed; the others named with the reason they are missing."""
    found: list[Target] = []
    missing: list[str] = []
    litellm = peers / "litellm" / "bin" / "litellm"
    if litellm.exists():
        port = free_port()
        cfg = work / "litellm.yaml"
        cfg.write_text(
            f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
            f"      api_base: http://127.0.0.1:{fake_port}/v1\n      api_key: {PEER_KEY}\n"
            f"general_settings:\n  master_key: {PEER_KEY}\n"
        )
        cmd = [
            str(litellm),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]
        procs.append(start(cmd, 0, work / "litellm.out"))
        found.append(Target("litellm", port, (f"Authorization: Bearer {PEER_KEY}",)))
    else:
        missing.append(f"litellm (not installed under {peers}: run scripts/dev.sh bench --llm)")
    server = peers / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if server.exists() and shutil.which("node"):
        port = free_port()
        procs.append(start(["node", str(server), f"--port={port}", "--headless"], 0, work / "portkey.out"))
        headers = (
            f"Authorization: Bearer {PEER_KEY}",
            "x-portkey-provider: openai",
            f"x-portkey-custom-host: http://127.0.0.1:{fake_port}/v1",
        )
        found.append(
            Target("portkey", port, headers, "waits 25 ms before each stream's first chunk by design")
        )
    else:
        missing.append(f"portkey (not installed under {peers}, or no node: run scripts/dev.sh bench --llm)")
    ready: list[Target] = []
    for target in found:
        try:
            wait_port(target.port, PEER_START_S)
            ready.append(target)
        except SystemExit:
            missing.append(f"{target.name} (did not listen within {PEER_START_S} s: see its log)")
    return ready, missing


# One run against one target: (target, seconds or None for the row's duration) -> the run's figures.
Measure = Callable[[Target, int | None], dict[str, float]]


def alternate(targets: list[Target], runs: int, measure: Measure) -> dict[str, list[dict[str, float]]]:
    """Each target in turn, ``runs`` times (drift hits all alike), after a 1 s warm-up of each."""
    per: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
    for t in targets:  # warm-up: pools filled, imports done
        measure(t, 1)
    for _ in range(runs):
        for t in targets:
            per[t.name].append(measure(t, None))
    return per


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def paired_ratios(runs: list[dict[str, float]], against: list[dict[str, float]], key: str) -> list[float]:
    """Each round's ratio of two targets measured one after the other. This VM has phases (seconds to
    minutes) where everything runs up to 2x slower: a ratio of two runs taken seconds apart sees the
    same phase far more often than a ratio of medians taken over the whole row."""
    return [ratio(a[key], b[key]) for a, b in zip(runs, against, strict=True)]


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def check_tokens(log: Path) -> dict[str, object]:
    """Every llm line of a 200 answer must carry the fake's own counts: PROMPT_TOKENS and CHUNKS.

    wrk closes its connections at the end of each run, cutting the streams then in flight; the log gives
    no sign of it (status 200, usage missing: it comes last). A stream is counted as cut when fewer bytes
    went out than the longest stream of its endpoint: a complete stream whose usage went missing still
    counts as wrong."""
    lines = []
    full: dict[str, int] = {}  # endpoint -> bytes of a complete stream
    for line in log.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        llm = doc.get("llm")
        if not isinstance(llm, dict) or doc.get("status") != 200 or llm.get("endpoint") == "models":
            continue
        lines.append(doc)
        if llm.get("stream"):
            endpoint = str(llm.get("endpoint"))
            full[endpoint] = max(full.get(endpoint, 0), int(doc.get("bytes_out", 0)))
    seen = wrong = cut = 0
    samples: list[object] = []
    for doc in lines:
        llm = doc["llm"]
        if llm.get("stream") and int(doc.get("bytes_out", 0)) < full[str(llm.get("endpoint"))]:
            cut += 1
            continue
        seen += 1
        if llm.get("prompt_tokens") != PROMPT_TOKENS or llm.get("completion_tokens") != CHUNKS:
            wrong += 1
            if len(samples) < 5:
                samples.append(doc)
    return {"lines": seen, "wrong": wrong, "cut_by_client": cut, "wrong_samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 run x 2 s per row and target")
    parser.add_argument("--runs", type=int, help="runs per row and target (default 5)")
    parser.add_argument("--duration", type=int, help="seconds per run (default 8)")
    parser.add_argument(
        "--peers", type=Path, default=ROOT / "bench" / ".peers", help="where the peers are installed"
    )
    parser.add_argument("--no-peers", action="store_true", help="fastgw, the floor and direct only")
    parser.add_argument(
        "--stream-writes",
        choices=["per-event", "batched"],
        default="per-event",
        help="how the fake writes a stream: each event apart (as a provider does), or the rest at once",
    )
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 5)
    duration = args.duration or (2 if args.quick else 8)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("bench needs 2 CPUs: the gateways on CPU 0, the fake provider and load on CPU 1")
    if not shutil.which("wrk"):
        raise SystemExit("bench needs wrk: run `scripts/dev.sh system bench`")
    work = Path(tempfile.mkdtemp(prefix="fastgw-llm-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        fake_port, gw_port, admin_port, bare_port = free_port(), free_port(), free_port(), free_port()
        fake = [str(ROOT / "bench" / "llm_fake.py"), str(fake_port), str(CHUNKS), args.stream_writes]
        fake_cmd = [sys.executable, *fake]
        procs.append(start(fake_cmd, 1, work / "fake.out"))
        conf = gateway_config(work, gw_port, admin_port, fake_port)
        os.environ["BENCH_FAKE_PROVIDER_KEY"] = PEER_KEY
        gw_cmd = [sys.executable, "-m", "fastgw", "run", str(conf), "--workers", "1"]
        procs.append(start(gw_cmd, 0, work / "fastgw.out"))  # supervisor, control and the worker on CPU 0
        bare_cmd = [sys.executable, str(ROOT / "bench" / "bare_proxy.py"), str(bare_port), str(fake_port)]
        procs.append(start(bare_cmd, 0, work / "bare.out"))
        for port in (fake_port, gw_port, admin_port, bare_port):
            wait_port(port)
        pid = worker_pid(work / "fastgw.out")
        time.sleep(1)  # let the worker settle after start-up before reading its idle memory
        idle_rss = rss_mib(pid)
        key = issue_api_key(admin_port, (work / "admin.token").read_text())
        plain = (f"Authorization: Bearer {PEER_KEY}",)
        direct = Target("direct", fake_port, plain)
        floor = Target("floor", bare_port, plain)
        fastgw = Target("fastgw", gw_port, (f"Authorization: Bearer {key}",))
        governed = Target("fastgw+gov", gw_port, fastgw.headers, prefix="/gov")
        peers, missing = (
            ([], ["all (--no-peers)"]) if args.no_peers else start_peers(args.peers, fake_port, work, procs)
        )
        if missing:
            print("peers missing, their rows and ratios are absent: " + "; ".join(missing), flush=True)
        if not LATENCY_PRIORITY:
            print("no chrt -f: the latency rows' client shares CPU 1 with the fake at normal priority")
        everyone = [direct, floor, fastgw, *peers]
        chat_path = stream_path = "/v1/chat/completions"

        def closed(path: str, body: dict[str, object], conns: int) -> Measure:
            return lambda t, s: wrk(t, path, body, conns, s or duration, work)

        rows: dict[str, dict[str, object]] = {}

        def record(name: str, per: dict[str, list[dict[str, float]]], extra: dict[str, object]) -> None:
            rows[name] = {
                "targets": {n: summarize(r) if "rps" in r[0] else {"runs": r} for n, r in per.items()},
                **extra,
            }

        # 1. non-streamed chat, closed loop c=64; fastgw+gov: with a budget and a token limit on
        # governed runs right after fastgw in each round: its bar is the median of the rounds' ratios
        per = alternate([direct, floor, fastgw, governed, *peers], runs, closed(chat_path, CHAT, 64))
        rps = {n: median(r, "rps") for n, r in per.items()}
        bars = {"vs floor (>= 0.25)": ratio(rps["fastgw"], rps["floor"])}
        paired = paired_ratios(per["fastgw+gov"], per["fastgw"], "rps")
        bars["fastgw+gov vs fastgw (>= 0.9)"] = statistics.median(paired)
        if "litellm" in rps:
            bars["vs litellm (>= 150)"] = ratio(rps["fastgw"], rps["litellm"])
        if "portkey" in rps:
            bars["vs portkey (>= 10)"] = ratio(rps["fastgw"], rps["portkey"])
        record("chat c=64", per, {"bars": bars, "fastgw+gov vs fastgw per round": paired})
        show("chat c=64 req/s", per, "rps", bars)

        # 2. open loop at 1,000 req/s: what each layer adds over calling the fake directly (peers cannot
        # hold this rate on one core: LiteLLM ~58 req/s, Portkey ~770, so they are not offered it)
        rate_args = lambda s: [str(OPEN_LOOP_RATE), str(s or duration)]  # noqa: E731
        per = alternate(
            [direct, floor, fastgw],
            runs,
            lambda t, s: load_tool("open-loop", t, chat_path, CHAT, rate_args(s), work),
        )
        added = {
            n: {q: median(r, q) - median(per["direct"], q) for q in ("p50_ms", "p99_ms")}
            for n, r in per.items()
        }
        bars = {
            "fastgw added p50 ms (<= 0.3)": added["fastgw"]["p50_ms"],
            "added p99 vs floor's (<= 1.5)": ratio(added["fastgw"]["p99_ms"], added["floor"]["p99_ms"]),
        }
        record(f"open loop {OPEN_LOOP_RATE} req/s", per, {"added_ms": added, "bars": bars})
        show(f"open loop {OPEN_LOOP_RATE}/s p50 ms", per, "p50_ms", bars)

        # 3. streams of 100 chunks, c=16, OpenAI client -> OpenAI provider
        per = alternate(everyone, runs, closed(stream_path, STREAM, 16))
        streams = {n: median(r, "rps") for n, r in per.items()}
        bars = {"vs floor (>= 0.6)": ratio(streams["fastgw"], streams["floor"])}
        for peer in ("litellm", "portkey"):
            if peer in streams:
                bars[f"vs {peer}"] = ratio(streams["fastgw"], streams[peer])
        record("streams c=16 openai->openai", per, {"bars": bars})
        show("streams/s c=16 openai", per, "rps", bars)

        # 4. the same streams through the Anthropic Messages API: translated request and every event
        anth = Target("fastgw", gw_port, (*fastgw.headers, "anthropic-version: 2023-06-01"))
        per = alternate([anth], runs, closed("/v1/messages", ANTHROPIC_STREAM, 16))
        bars = {"vs floor's openai streams (>= 0.4)": ratio(median(per["fastgw"], "rps"), streams["floor"])}
        record("streams c=16 anthropic->openai", per, {"bars": bars})
        show("streams/s c=16 anthropic", per, "rps", bars)

        # 5. time to the first streamed event, one stream at a time
        seconds = lambda s: [str(s or duration)]  # noqa: E731
        per = alternate(
            everyone, runs, lambda t, s: load_tool("ttfb", t, stream_path, STREAM, seconds(s), work)
        )
        ttfb_added = {n: median(r, "p50_ms") - median(per["direct"], "p50_ms") for n, r in per.items()}
        bars = {"fastgw added p50 ms (<= 1)": ttfb_added["fastgw"]}
        record(
            "ttfb",
            per,
            {"added_p50_ms": ttfb_added, "bars": bars, "notes": {t.name: t.note for t in peers if t.note}},
        )
        show("ttfb p50 ms", per, "p50_ms", bars, {t.name: t.note for t in peers if t.note})

        # 6. memory and token counts
        rows["idle worker RSS"] = {"mib": idle_rss, "bars": {"MiB (< 45)": idle_rss}}
        print(f"{'idle worker RSS':28} {idle_rss:.1f} MiB (bar < 45)")
        tokens = check_tokens(work / "access.log")
        rows["token counts"] = tokens
        print(
            f"{'token counts':28} {tokens['lines']} llm log lines,"
            f" {tokens['wrong']} not the fake's counts (bar: 0);"
            f" {tokens['cut_by_client']} streams cut by wrk at a run's end"
        )

        report = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "runs": runs,
            "duration_s": duration,
            "chunks": CHUNKS,
            "stream_writes": args.stream_writes,
            "latency_client": "SCHED_FIFO 1" if LATENCY_PRIORITY else "normal priority (no chrt -f allowed)",
            "peers_missing": missing,
            "rows": rows,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS / f"llm-{stamp}{'-quick' if args.quick else ''}.json"
        out.write_text(json.dumps(report, indent=2))
        print(f"\nwritten {out.relative_to(ROOT)}")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def show(
    name: str,
    per: dict[str, list[dict[str, float]]],
    key: str,
    bars: dict[str, float],
    notes: dict[str, str] | None = None,
) -> None:
    """One row: each target's median (p50/p99 where there are) and the bars' ratios beside it."""
    cells = []
    for target, runs in per.items():
        value = median(runs, key)
        cell = f"{target} {value:.0f}" if key == "rps" else f"{target} {value:.3f}"
        if key == "rps" and "p50_ms" in runs[0]:
            cell += f" ({median(runs, 'p50_ms'):.2f}/{median(runs, 'p99_ms'):.2f} ms)"
        elif "p99_ms" in runs[0]:
            cell += f"/{median(runs, 'p99_ms'):.3f}"
        errors = sum(r.get("non_2xx", 0) + r.get("socket_errors", 0) + r.get("errors", 0) for r in runs)
        if errors:
            cell += f" [{errors:.0f} errors: see the JSON]"
        if notes and target in notes:
            cell += f" [{notes[target]}]"
        cells.append(cell)
    verdict = "  ".join(f"{label}: {value:.2f}" for label, value in bars.items())
    print(f"{name:28} {'  '.join(cells)}\n{'':28} {verdict}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
