"""nsp-drift benchmark: ARM reads, wall time, CPU, sweep cost, cold start, memory.

    python -m bench.run [--accounts 10000] [--latency-ms 50] [--out bench/report.json]

Everything runs against a real HTTPS ARM on loopback (bench/server.py) with the real SDK
clients, side by side in one run; figures are ratios or counts, so they compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench.server import ArmServer, StaticToken, TokenBucket, serving
from shared import runtime
from shared.adapters.arm_reader import ArmReader
from shared.adapters.estate import Estate
from shared.config import RulesConfig
from shared.evaluate import evaluate
from shared.pipeline import CollectingSink, Pipeline
from shared.replay import MemoryQueue, record_baseline_estate
from shared.state.sqlite_store import SqliteStateStore
from shared.targeting import Scope
from shared.wiring import EstateClients, LiveClients

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = json.loads((ROOT / "shared" / "samples" / "estate.json").read_text())
EVENTS = json.loads((ROOT / "shared" / "samples" / "events.json").read_text())
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
TODAY = date(2026, 11, 25)


def _template(name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    account = next(v for k, v in SAMPLE.items() if k.endswith(f"/storageAccounts/{name}"))
    config = next((v for k, v in SAMPLE.items() if f"/{name}/networkSecurityPerimeterConfigurations/" in k), None)
    return account, config


def build_estate(accounts: int, in_perimeter_every: int = 10, sftp: set[int] | None = None) -> dict[str, Any]:
    """``accounts`` copies of the sample's clean account; every n-th one in the perimeter."""
    account, config = _template("stcontosoclean01")
    estate: dict[str, Any] = {k: v for k, v in SAMPLE.items() if "/networkSecurityPerimeters/" in k}
    for i in range(accounts):
        name = f"stbench{i:05d}"
        body = json.loads(json.dumps(account).replace("stcontosoclean01", name))
        if sftp and i in sftp:
            body["properties"]["isSftpEnabled"] = True
        estate[body["id"]] = body
        if config is not None and i % in_perimeter_every == 0:
            cfg = json.loads(json.dumps(config).replace("stcontosoclean01", name))
            estate[cfg["id"]] = cfg
    return estate


def live(server: ArmServer, read_timeout: float = 60.0) -> LiveClients:
    from shared.adapters.throttle import ReadBudget

    return LiveClients(
        base_url=server.base_url,
        connection_verify=server.ca_path,
        cred=StaticToken(),
        budget=ReadBudget(),
        read_timeout=read_timeout,
    )


def reads_per_evaluation(latency: float) -> dict[str, Any]:
    estate = Estate(build_estate(20))
    inside = next(i for i in estate.ids_of_type("microsoft.storage/storageaccounts") if i.endswith("00000"))
    outside = next(i for i in estate.ids_of_type("microsoft.storage/storageaccounts") if i.endswith("00001"))
    out: dict[str, Any] = {}
    with serving(estate, latency=latency) as server:
        clients = live(server)

        async def one(account: str) -> float:
            reader = ArmReader(clients)
            started = time.perf_counter()
            await reader.read_account(account)
            return time.perf_counter() - started

        # Warm up: TLS connections and the SDKs' lazy imports (compute, network, dataprotection).
        runtime.run(one(inside))
        runtime.run(one(outside))
        for label, account in (("in_perimeter", inside), ("outside_perimeter", outside)):
            before = server.total()
            wall = runtime.run(one(account))
            out[label] = {"requests": server.total() - before, "wall_over_latency": round(wall / latency, 2)}
        runtime.run(clients.close())
    return out


def storm(latency: float) -> dict[str, Any]:
    estate_before = build_estate(50, in_perimeter_every=1)
    estate_after = build_estate(50, in_perimeter_every=1, sftp=set(range(50)))
    ids = [k for k in estate_after if k.count("/") == 8 and "/storageAccounts/" in k]
    template = EVENTS[0]
    events = []
    for n in range(1000):
        event = copy.deepcopy(template)
        event["id"] = f"bench-{n:05d}"
        event["subject"] = event["data"]["resourceUri"] = ids[n % len(ids)]
        events.append(event)
    with tempfile.TemporaryDirectory() as tmp, serving(Estate(estate_after), latency=latency) as server:
        store = SqliteStateStore(str(Path(tmp) / "s.sqlite"))
        record_baseline_estate(Estate(estate_before), store, RulesConfig())
        clients = live(server)
        queue, sink = MemoryQueue(), CollectingSink()
        pipeline = Pipeline(clients, store, RulesConfig(), Scope((SUB,)), 30.0, queue.send, sink)
        tracemalloc.start()
        started = time.perf_counter()
        report = pipeline.intake(events)
        targets = queue.drain()

        async def go() -> None:
            await asyncio.gather(*(pipeline.evaluate_pending(t) for t in targets))

        runtime.run(go())
        wall = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        runtime.run(clients.close())
        store.close()
        return {
            "events": len(events),
            "accounts": len(ids),
            "accepted": report.accepted,
            "evaluations": len(targets),
            "transitions": len(sink.transitions),
            "arm_requests": server.total(),
            "arm_requests_per_event": round(server.total() / len(events), 3),
            "wall_seconds": round(wall, 2),
            "peak_traced_memory_mb": round(peak / 2**20, 1),
        }


def cpu_evaluations_per_second() -> dict[str, Any]:
    estate = Estate(build_estate(200, in_perimeter_every=1))
    clients = EstateClients(estate)
    ids = list(estate.ids_of_type("microsoft.storage/storageaccounts"))

    async def go() -> None:
        reader = ArmReader(clients)
        for account in ids:
            evaluate(await reader.read_account(account), RulesConfig(), TODAY)

    started = time.process_time()
    runtime.run(go())
    cpu = time.process_time() - started
    return {
        "evaluations": len(ids),
        "cpu_seconds": round(cpu, 2),
        "evaluations_per_cpu_second": round(len(ids) / cpu, 1),
    }


def sweeps(accounts: int, latency: float, bucket_accounts: int) -> dict[str, Any]:
    """Graph sweep of ``accounts`` with the 250/25 bucket; full ARM sweep counted without it."""
    changed = set(range(0, accounts, 100))  # 1% of the accounts drifted since the baseline
    before = build_estate(accounts)
    after = build_estate(accounts, sftp=changed)
    out: dict[str, Any] = {"accounts": accounts, "changed": len(changed)}
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStateStore(str(Path(tmp) / "s.sqlite"))
        record_baseline_estate(Estate(before), store, RulesConfig())
        for label, use_graph, bucket, lat in (
            ("graph_sweep", True, TokenBucket(), latency),
            ("full_arm_sweep_unthrottled_count", False, None, 0.0),
        ):
            with serving(Estate(after), latency=lat, bucket=bucket) as server:
                clients = live(server)
                pipeline = Pipeline(
                    clients,
                    store,
                    RulesConfig(),
                    Scope((SUB,)),
                    30.0,
                    MemoryQueue().send,
                    CollectingSink(),
                    concurrency=16,
                )
                started = time.perf_counter()
                report = runtime.run(pipeline.sweep([SUB], use_graph=use_graph))
                wall = time.perf_counter() - started
                runtime.run(clients.close())
                out[label] = {
                    "evaluated": report.accounts,
                    "skipped_unchanged": report.unchanged,
                    "requests": server.total(),
                    "throttled_by_server": server.throttled,
                    "failed": len(report.failed),
                    "wall_seconds": round(wall, 2),
                    "arm_bound_seconds_at_25_per_s": round(max(server.total() - 250, 0) / 25, 1),
                }
        store.close()
    # A full ARM sweep against the enforced bucket: pacing keeps every 429 from escaping.
    small = build_estate(bucket_accounts)
    with tempfile.TemporaryDirectory() as tmp, serving(Estate(small), latency=latency, bucket=TokenBucket()) as server:
        store = SqliteStateStore(str(Path(tmp) / "s.sqlite"))
        clients = live(server)
        pipeline = Pipeline(
            clients, store, RulesConfig(), Scope((SUB,)), 30.0, MemoryQueue().send, CollectingSink(), concurrency=16
        )
        started = time.perf_counter()
        report = runtime.run(pipeline.sweep([SUB]))
        runtime.run(clients.close())
        out["full_arm_sweep_with_bucket"] = {
            "accounts": bucket_accounts,
            "requests": server.total(),
            "throttled_by_server": server.throttled,
            "errors_escaping": len(report.failed),
            "wall_seconds": round(time.perf_counter() - started, 2),
        }
        store.close()
    return out


def cold_start() -> dict[str, Any]:
    times = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import function_app"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        last = [line for line in out.stderr.splitlines() if line.strip().endswith("| function_app")][-1]
        times.append(int(last.split("|")[1]) / 1e6)
    # VmHWM (peak RSS of this address space) rather than ru_maxrss, which survives exec on Linux
    # and would report the benchmark's own peak.
    code = "import function_app; print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    rss = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {"import_seconds": round(min(times), 3), "peak_rss_mb": round(int(rss.stdout) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--bucket-accounts", type=int, default=1_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "report.json"))
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    report = {
        "date": datetime.now(UTC).date().isoformat(),
        "latency_ms": args.latency_ms,
        "evaluation": reads_per_evaluation(latency),
        "storm": storm(latency),
        "cpu": cpu_evaluations_per_second(),
        "sweep": sweeps(args.accounts, latency, args.bucket_accounts),
        "cold_start": cold_start(),
        "max_rss_mb_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))


def markdown(r: dict[str, Any]) -> str:
    e, s, c, w, k = r["evaluation"], r["storm"], r["cpu"], r["sweep"], r["cold_start"]
    g, f, b = w["graph_sweep"], w["full_arm_sweep_unthrottled_count"], w["full_arm_sweep_with_bucket"]
    rows = [
        (
            "ARM requests per evaluation (in a perimeter / outside)",
            f"{e['in_perimeter']['requests']} / {e['outside_perimeter']['requests']}",
        ),
        (
            "one evaluation's wall time / injected latency (in / outside)",
            f"{e['in_perimeter']['wall_over_latency']} / {e['outside_perimeter']['wall_over_latency']}",
        ),
        (
            f"storm: {s['events']} events over {s['accounts']} accounts",
            f"{s['evaluations']} evaluations, {s['arm_requests']} ARM requests ({s['arm_requests_per_event']} per event), {s['transitions']} transitions",
        ),
        ("evaluations per CPU second (zero latency, in perimeter)", f"{c['evaluations_per_cpu_second']}"),
        (
            f"graph sweep of {w['accounts']} accounts ({w['changed']} changed), 250/25 bucket",
            f"{g['requests']} requests, {g['evaluated']} evaluated, {g['wall_seconds']} s, {g['throttled_by_server']} throttled, {g['failed']} failed",
        ),
        (
            f"full ARM sweep of {w['accounts']} accounts",
            f"{f['requests']} requests (at least {f['arm_bound_seconds_at_25_per_s']} s at 25 reads/s)",
        ),
        (
            f"full ARM sweep of {b['accounts']} accounts against the bucket",
            f"{b['requests']} requests, {b['wall_seconds']} s, {b['throttled_by_server']} 429s absorbed, {b['errors_escaping']} escaping",
        ),
        ("cold start: import function_app", f"{k['import_seconds']} s, {k['peak_rss_mb']} MB peak RSS"),
        ("storm peak traced memory", f"{s['peak_traced_memory_mb']} MB"),
    ]
    lines = [
        f"Benchmark {r['date']} (latency {r['latency_ms']:.0f} ms, loopback HTTPS, real SDK clients)",
        "",
        "| measure | result |",
        "|---|---|",
    ]
    lines += [f"| {a} | {b_} |" for a, b_ in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
