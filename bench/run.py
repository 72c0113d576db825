"""nsp-drift benchmark: the product, end to end, against ARM's limits, every remote call counted.

    python -m bench.run [--quick] [--write-readme] [--only perimeter,sweep,graph_sweep,storm,cold_start,cpu]
                        [--perimeter-accounts 2000] [--sweep-accounts 10000] [--storm-events 1000]
                        [--storm-accounts 50] [--latency-ms 50] [--window-seconds 30] [--page-size 1000]

What runs (each scenario in a fresh Azurite and a fresh process of its own):

- The function app itself: ``function_app``'s user functions (Event Grid trigger, queue trigger,
  timer triggers) invoked as the Functions host invokes them (bench/host.py), over the real
  evaluation queue and Table store on Azurite (started as tests/azurite.py starts it), settings
  from the environment as in Azure (``AzureWebJobsStorage``, ``NSP_DRIFT_*``), alerts delivered by
  the ``webhook`` destination to a loopback receiver. Every queue message is one invocation of the
  queue trigger, timed on its own; follow-up messages (retries, fan-out) are processed the same
  way until the queue is empty.
- ARM: the HTTPS loopback server (bench/server.py) with ``NSP_DRIFT_CLOUD``/``NSP_DRIFT_AUTHORITY_HOST``
  pointing at it (it also issues the service principal's token), injected latency per request,
  ARM's read bucket (250 per subscription, 25 per second) and Resource Graph's quota (15 per 5 s).
  Estates (bench/estates.py) page every list (``nextLink``), have VMs with VHDs, file shares,
  backup instances and policies, all copied from the official examples in the bundled sample.
- The state before each scenario is a baseline recorded into the same Table store (not counted).

Counted: ARM reads by path template, Resource Graph queries and token requests at the server;
the app's Table and Queue requests at the HTTP layer (bench/host.py ``StorageCalls``); HTTP
deliveries at the receiver; the host's own queue polling apart. Reported per scenario: total wall,
the longest single invocation, invocations by function, requests by kind, peak RSS of the app's
process (VmHWM). The first invocation in a fresh process is timed from process start to the end
of its first evaluation, next to a warm one.

``--write-readme`` replaces the README section between ``<!-- bench:start -->`` and
``<!-- bench:end -->`` with this run's table (date, machine load, figures, goals met or not).
The full run takes long by nature: the 10,000-account sweep alone is thousands of reads at
25 per second. ``--quick`` runs every scenario at a tenth of the size.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.estates import CHANGED_RULE, SUB, account_ids, build_estate, members
from bench.host import host_settings
from shared.adapters import runtime
from shared.entrypoints import settings as _settings

if TYPE_CHECKING:
    from bench.server import ArmServer, DeliveryReceiver

# bench.server (the loopback ARM and the receiver) and shared.adapters.estate are imported where
# they are used: the cold-start child (``--child cold``) is the app's process and must not carry
# the benchmark's own servers into the figure it measures.

__all__ = ["build_estate", "live", "main", "unlimited"]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EVENTS = json.loads((ROOT / "shared" / "samples" / "events.json").read_text())
ACCOUNT_EVENT, RULE_EVENT = EVENTS[0], EVENTS[7]  # a storage account write; an NSP access-rule write
TODAY = date(2026, 11, 25)
ARM_BUCKET, ARM_RATE = 250, 25.0
DAY = 86_400.0
GRAPH_LIMIT, GRAPH_WINDOW = 15, 5.0
INVOCATION_BUDGET = _settings.Settings().invocation_budget_seconds  # NSP_DRIFT_INVOCATION_BUDGET_SECONDS's default
FIRST_INVOCATION_GOAL = (1.0, 100.0)  # seconds, MB
SCENARIOS = ("perimeter", "sweep", "graph_sweep", "storm", "cold_start", "cpu")


def live(server: ArmServer, read_timeout: float = 60.0, budget: Any = None) -> Any:
    """The production client factory, configured the way a custom-cloud user configures it
    (``server.environment()``: NSP_DRIFT_CLOUD and NSP_DRIFT_AUTHORITY_HOST = the loopback server,
    a service principal, SSL_CERT_FILE = its CA), with its own read budget (ARM's 250/25 unless
    ``budget`` says otherwise). The environment is set while the factory reads it, then restored."""
    from unittest import mock

    from shared.adapters.throttle import ReadBudget
    from shared.wiring import LiveClients

    with mock.patch.dict(os.environ, server.environment()):
        return LiveClients(budget=budget or ReadBudget(), read_timeout=read_timeout)


def unlimited() -> Any:
    """A read budget that never paces: for runs that count requests or CPU without a bucket."""
    from shared.adapters.throttle import ReadBudget

    return ReadBudget(capacity=1e12, refill_per_second=1e12, reserve=0)


@dataclass(frozen=True)
class Options:
    perimeter_accounts: int = 2_000
    sweep_accounts: int = 10_000
    storm_events: int = 1_000
    storm_accounts: int = 50
    latency: float = 0.05
    window: float = 30.0
    page_size: int = 1_000
    features_every: int = 10  # every n-th perimeter account has shares, a VHD VM and a backup instance
    cold_runs: int = 3
    deadline: float = 3 * 3600.0  # per scenario: the bench gives up (and says so) after this
    function_timeout: float | None = None  # None: host.json's functionTimeout


QUICK = Options(perimeter_accounts=200, sweep_accounts=1_000, storm_events=100, storm_accounts=10, cold_runs=1)


# -- the pieces every scenario shares ----------------------------------------------------------


@contextmanager
def azurite() -> Iterator[Any]:
    sys.path.insert(0, str(ROOT))  # tests/azurite.py: the one way the repository starts Azurite
    from tests.azurite import start_azurite

    server = start_azurite()
    try:
        yield server
    finally:
        server.close()


def baseline(estate: dict[str, Any], connection_string: str, prefix: str) -> float:
    """Record the estate's evaluations as the stored state (offline reads: not counted), as read a
    day before the run (the previous daily sweep), not seconds before it: the full sweep reads an
    account afresh (GET included) when its stored read may be younger than the list (a lease)."""
    from shared.adapters.estate import Estate
    from shared.adapters.state.table_store import TableStateStore
    from shared.core.config import RulesConfig
    from shared.entrypoints.replay import record_baseline_estate

    started = time.perf_counter()
    store = TableStateStore.from_connection_string(connection_string, prefix)
    try:
        record_baseline_estate(Estate(estate), store, RulesConfig(), clock=lambda: time.time() - DAY)
    finally:
        store.close()
    return round(time.perf_counter() - started, 1)


def app_environment(
    storage: Any, prefix: str, server: ArmServer, receiver: DeliveryReceiver, window: float
) -> dict[str, str]:
    """The app settings of the benchmark's function app (what Azure would set), nothing else of ours."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("NSP_DRIFT_", "AzureWebJobs", "AZURE_"))}
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    destinations = [
        {
            "name": "bench-webhook",
            "type": "webhook",
            "url_setting": "NSP_DRIFT_BENCH_URL",
            "secret_setting": "NSP_DRIFT_BENCH_SECRET",
            "min_severity": "info",
        }
    ]
    return {
        **keep,
        **server.environment(),
        "AzureWebJobsStorage": storage.connection_string,
        "NSP_DRIFT_SUBSCRIPTIONS": SUB,
        "NSP_DRIFT_COALESCE_SECONDS": f"{window:g}",
        "NSP_DRIFT_STATE_TABLE_PREFIX": prefix,
        "NSP_DRIFT_DESTINATIONS": json.dumps(destinations),
        "NSP_DRIFT_BENCH_URL": receiver.url,
        "NSP_DRIFT_BENCH_SECRET": secret,
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONPATH": str(ROOT),
    }


def run_child(mode: str, spec: dict[str, Any], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """``python -m bench.run --child MODE SPEC``: a process of its own (its own peak memory, a
    cold start where that is measured). The last line of its stdout is its JSON report."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
        spec_path = handle.name
    log_path = Path(spec_path).with_suffix(".log")
    try:
        with log_path.open("w") as log:
            started = time.time()
            out = subprocess.run(
                [sys.executable, "-m", "bench.run", "--child", mode, spec_path],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=timeout,
                check=False,
            )
        if out.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"bench child {mode} exited with {out.returncode}:\n{tail}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        result["spawned_at"] = started
        return result
    finally:
        Path(spec_path).unlink(missing_ok=True)
        log_path.unlink(missing_ok=True)


def arm_counts(server: ArmServer) -> dict[str, Any]:
    counts = dict(server.counts)
    reads = {k: v for k, v in counts.items() if k.startswith("GET ")}
    graph = {k: v for k, v in counts.items() if k.startswith("POST ")}
    return {
        "reads": sum(reads.values()),
        "graph_queries": sum(graph.values()),
        "tokens": len(server.token_requests),
        "throttled": server.throttled,
        "graph_throttled": server.graph_throttled,
        "reads_by_template": dict(sorted(reads.items(), key=lambda kv: -kv[1])),
        "statuses": {str(k): v for k, v in sorted(server.statuses.items())},
    }


def bucket_bound(reads: int) -> float:
    """The least wall ARM's bucket allows for ``reads`` reads of one subscription."""
    return round(max(reads - ARM_BUCKET, 0) / ARM_RATE, 1)


def _event(template: dict[str, Any], n: int, resource: str, prefix: str) -> dict[str, Any]:
    event = copy.deepcopy(template)
    event["id"] = f"{prefix}-{n:05d}"
    event["subject"] = event["data"]["resourceUri"] = resource
    if isinstance(event["data"].get("authorization"), dict):
        event["data"]["authorization"]["scope"] = resource
    return event


def scenario(
    name: str,
    options: Options,
    before: dict[str, Any],
    after: dict[str, Any],
    triggers: list[dict[str, Any]],
) -> dict[str, Any]:
    """Baseline ``before`` into a fresh Azurite, serve ``after`` from ARM, run ``triggers`` in a
    fresh app process until its queue is empty; every count of the run."""
    from bench.server import GraphQuota, TokenBucket, receiving, serving
    from shared.adapters.estate import Estate

    prefix = f"bench{re.sub('[^a-z0-9]', '', name.lower())}"
    with azurite() as storage:
        baseline_seconds = baseline(before, storage.connection_string, prefix)
        with (
            serving(
                Estate(after, page_size=options.page_size),
                latency=options.latency,
                bucket=TokenBucket(ARM_BUCKET, ARM_RATE),
                graph_quota=GraphQuota(GRAPH_LIMIT, GRAPH_WINDOW),
                max_seconds=options.deadline + 600,
            ) as server,
            receiving() as receiver,
        ):
            env = app_environment(storage, prefix, server, receiver, options.window)
            spec = {
                "triggers": triggers,
                "deadline": options.deadline,
                "prefix": prefix,
                "function_timeout": options.function_timeout,
            }
            child = run_child("scenario", spec, env, options.deadline + 900)
            arm = arm_counts(server)
            deliveries = {
                "requests": receiver.requests,
                "events": dict(receiver.events),
                "transitions": {f"{kind} {rule}": n for (kind, rule), n in sorted(receiver.rules.items())},
                "resources": {f"{kind} {rule}": sorted(ids) for (kind, rule), ids in sorted(receiver.resources.items())},
            }
    invocations = child["invocations"]
    longest = max((v["longest_seconds"] for v in invocations.values()), default=0.0)
    return {
        "accounts": len(account_ids(after)),
        "members": len(members(after)),
        "baseline_seconds": baseline_seconds,
        "arm": arm,
        "storage": child["storage"],
        "deliveries": deliveries,
        "invocations": invocations,
        "longest_invocation_seconds": longest,
        "over_budget": child["over_budget"],
        "over_function_timeout": child["over_function_timeout"],
        "wall_seconds": child["wall_seconds"],
        # From the start of the first invocation that is not intake (a queue message after the
        # coalescing window, or the timer) to the last one's end: the work, without the window.
        "work_seconds": _work(invocations),
        "host_calls": child["host_calls"],
        "poisoned": child["poisoned"],
        "timed_out": child["timed_out"],
        "killed": child["killed"],
        "lost_leases": child["lost_leases"],
        "peak_rss_mb": child["peak_rss_mb"],
        "bucket_bound_seconds": bucket_bound(arm["reads"]),
    }


def _work(invocations: dict[str, Any]) -> float:
    work = [v for k, v in invocations.items() if k != "on_resource_event"]
    if not work:
        return 0.0
    return round(max(v["last_end"] for v in invocations.values()) - min(v["first_start"] for v in work), 2)


# -- the scenarios -----------------------------------------------------------------------------


def perimeter_change(options: Options) -> dict[str, Any]:
    """One access-rule write on a perimeter of N accounts (all associated with it)."""
    n = options.perimeter_accounts
    before = build_estate(n, in_perimeter_every=1, features_every=options.features_every)
    after = build_estate(n, in_perimeter_every=1, features_every=options.features_every, rule_change=True)
    event = _event(RULE_EVENT, 0, CHANGED_RULE, "bench-rule")
    result = scenario("perimeter", options, before, after, [{"event": event}])
    result["goal_reads"] = n + 5
    result["goal_wall_seconds"] = round(1.2 * result["bucket_bound_seconds"], 1)
    return result


def _sweep_estates(options: Options) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    n, every = options.sweep_accounts, 10
    perimeter = range(0, n, every)
    featured = {i for i in perimeter if (i // every) % options.features_every == 1}
    changed = {i for i in perimeter if i % 100 == 0}  # 1 % of all accounts: their summary drifted
    hidden = [i for i in perimeter if i % 100 and i not in featured][:10]  # gained a VHD VM or a blob backup
    kwargs: dict[str, Any] = {"in_perimeter_every": every, "features_every": options.features_every}
    before = build_estate(n, **kwargs)
    after = build_estate(n, sftp=changed, vhd_vms=set(hidden[:5]), backups=set(hidden[5:]), **kwargs)
    ids = account_ids(after)
    expected = {  # the accounts each change must be reported for
        "opened sftp-enabled": [ids[i] for i in sorted(changed)],
        "opened unmanaged-disk": [ids[i] for i in hidden[:5]],
        "opened azure-backup": [ids[i] for i in hidden[5:]],
    }
    return before, after, expected


def _detected(result: dict[str, Any], expected: dict[str, list[str]]) -> dict[str, str]:
    """Per change: how many of the accounts it happened to had it delivered."""
    seen = result["deliveries"]["resources"]
    return {key: f"{len({a.lower() for a in want} & set(seen.get(key, [])))}/{len(want)}" for key, want in expected.items()}


def full_sweep(options: Options) -> dict[str, Any]:
    before, after, expected = _sweep_estates(options)
    result = scenario("sweep", options, before, after, [{"timer": "reconcile_full_sweep"}])
    result["goal_reads"] = int(options.sweep_accounts * 0.7)
    result["detected"] = _detected(result, expected)
    return result


def graph_sweep(options: Options) -> dict[str, Any]:
    before, after, expected = _sweep_estates(options)
    result = scenario("graphsweep", options, before, after, [{"timer": "reconcile_sweep"}])
    result["detected"] = _detected(result, expected)
    return result


def storm(options: Options) -> dict[str, Any]:
    """``storm_events`` account write events over ``storm_accounts`` accounts, all pushed at once."""
    a = options.storm_accounts
    before = build_estate(a, in_perimeter_every=1, features_every=options.features_every)
    after = build_estate(a, in_perimeter_every=1, features_every=options.features_every, sftp=set(range(a)))
    ids = account_ids(after)
    triggers = [{"event": _event(ACCOUNT_EVENT, n, ids[n % a], "bench-storm")} for n in range(options.storm_events)]
    result = scenario("storm", options, before, after, triggers)
    account_reads = sum(
        v for k, v in result["arm"]["reads_by_template"].items() if k.endswith("/Microsoft.Storage/storageAccounts/{name}")
    )
    storage = result["storage"]["table"] + result["storage"]["queue"]
    result.update(
        events=options.storm_events,
        evaluations=account_reads,  # every evaluation of an account reads the account once
        storage_calls_per_event=round(storage / options.storm_events, 2),
        arm_reads_per_event=round(result["arm"]["reads"] / options.storm_events, 3),
        goal_evaluations=a,
        goal_reads=8 * a,
        goal_storage_per_event=3.0,
    )
    return result


def cold_start(options: Options) -> dict[str, Any]:
    """A fresh app process: process start -> its first evaluation done (imports, settings, clients,
    token, reads, state), then a second, warm one in the same process. Two account windows are
    opened beforehand through the product's own intake; the host hands over their messages."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    from bench.server import receiving, serving
    from shared.adapters.estate import Estate
    from shared.adapters.queue import EvaluationQueue
    from shared.adapters.state.table_store import TableStateStore
    from shared.core.config import RulesConfig
    from shared.core.targeting import Scope
    from shared.core.work import QUEUE_NAME
    from shared.service.pipeline import CollectingSink, Pipeline

    runs = []
    estate = build_estate(10, in_perimeter_every=1, features_every=options.features_every)
    after = build_estate(10, in_perimeter_every=1, features_every=options.features_every, sftp={0, 1})
    ids = account_ids(after)
    for run in range(options.cold_runs):
        prefix = f"benchcold{run}"
        with azurite() as storage:
            baseline(estate, storage.connection_string, prefix)
            store = TableStateStore.from_connection_string(storage.connection_string, prefix)
            queue = EvaluationQueue.from_connection_string(storage.connection_string)
            pipeline = Pipeline(store, CollectingSink(), queue.send, RulesConfig(), Scope((SUB,)), window_seconds=0.0)
            pipeline.intake([_event(ACCOUNT_EVENT, n, ids[n], f"bench-cold{run}") for n in range(2)])
            store.close()
            reader = QueueClient.from_connection_string(
                storage.connection_string, QUEUE_NAME, message_decode_policy=TextBase64DecodePolicy()
            )
            messages = [
                {"id": m.id, "content": m.content, "dequeue_count": m.dequeue_count}
                for m in reader.receive_messages(max_messages=2, visibility_timeout=600)
            ]
            queue.close()
            reader.close()
            with (
                serving(Estate(after, page_size=options.page_size), latency=options.latency) as server,
                receiving() as receiver,
            ):
                env = app_environment(storage, prefix, server, receiver, options.window)
                result = run_child("cold", {"messages": messages}, env, 600)
                result["arm_reads"] = arm_counts(server)["reads"]
        result["process_to_first_evaluation_seconds"] = round(result["first_done_at"] - result["spawned_at"], 3)
        runs.append(result)
    middle = sorted(runs, key=lambda r: r["process_to_first_evaluation_seconds"])[len(runs) // 2]
    return {
        "runs": len(runs),
        "process_to_first_evaluation_seconds": middle["process_to_first_evaluation_seconds"],
        "all_runs_seconds": [r["process_to_first_evaluation_seconds"] for r in runs],
        "import_function_app_seconds": middle["import_seconds"],
        "first_invocation_seconds": middle["first_invocation_seconds"],
        "cpu_to_first_evaluation_seconds": middle["cpu_to_first_seconds"],
        "all_runs_cpu_seconds": [r["cpu_to_first_seconds"] for r in runs],
        "warm_invocation_seconds": middle["warm_invocation_seconds"],
        "rss_after_first_mb": middle["rss_after_first_mb"],
        "peak_rss_mb": middle["peak_rss_mb"],
        "arm_reads": middle["arm_reads"],
        "storage_first": middle["storage_first"],
        "statuses": middle["statuses"],
    }


def cpu(accounts: int = 200) -> dict[str, Any]:
    """Evaluations per CPU second at zero latency: the offline transport (SDK + rules only) and
    the loopback HTTPS (TLS, aiohttp, SDK, rules; CPU of the client's event-loop thread only)."""
    from bench.server import serving
    from shared.adapters.arm_reader import ArmReader
    from shared.adapters.estate import Estate
    from shared.core.config import RulesConfig
    from shared.core.evaluate import evaluate
    from shared.wiring import EstateClients

    estate = Estate(build_estate(accounts, in_perimeter_every=1))
    ids = list(estate.ids_of_type("microsoft.storage/storageaccounts"))

    async def evaluate_all(clients: Any) -> float:
        await ArmReader(clients).read_account(ids[0])  # warm: imports, connections
        started = time.thread_time()
        for account in ids:
            evaluate(await ArmReader(clients).read_account(account), RulesConfig(), TODAY)
        return time.thread_time() - started

    offline = EstateClients(estate)
    offline_cpu = runtime.run(evaluate_all(offline))
    runtime.run(offline.close())
    with serving(estate, latency=0.0) as server:
        clients = live(server, budget=unlimited())
        https_cpu = runtime.run(evaluate_all(clients))
        runtime.run(clients.close())
    return {
        "evaluations": len(ids),
        "offline_per_cpu_second": round(len(ids) / offline_cpu, 1),
        "https_per_cpu_second": round(len(ids) / https_cpu, 1),
    }


# -- the child processes -----------------------------------------------------------------------


def child_scenario(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.host import FunctionsHost, StorageCalls, host_settings, peak_rss_mb

    connection = os.environ["AzureWebJobsStorage"]
    calls = StorageCalls(connection, spec["prefix"]).install()
    settings = host_settings()
    if spec.get("function_timeout"):
        settings["function_timeout"] = float(spec["function_timeout"])
    host = FunctionsHost(connection, settings)
    triggers = []
    for trigger in spec["triggers"]:
        if "event" in trigger:
            triggers.append(("on_resource_event", host.event_argument(trigger["event"])))
        else:
            triggers.append((trigger["timer"], host.timer_argument()))
    wall = host.run(triggers, spec["deadline"])
    return {
        "wall_seconds": round(wall, 2),
        "invocations": host.summary(),
        "over_budget": host.over(INVOCATION_BUDGET),
        "over_function_timeout": host.over(host.settings["function_timeout"]),
        "storage": calls.summary(),
        "host_calls": dict(host.host_calls),
        "poisoned": host.poisoned,
        "timed_out": host.timed_out,
        "killed": [{"function": k.function, "started": round(k.started, 2)} for k in host.killed],
        "lost_leases": host.lost_leases,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_cold(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    from azure.functions.queue import QueueMessage

    import function_app  # the worker indexes the app: what the host does before the first invocation

    imported = time.perf_counter() - started
    from bench.host import CURRENT, StorageCalls, peak_rss_mb, rss_mb

    calls = StorageCalls(os.environ["AzureWebJobsStorage"], os.environ["NSP_DRIFT_STATE_TABLE_PREFIX"]).install()
    evaluate = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}[
        "evaluate_target"
    ]
    walls, done_at, rss_first, storage_first, cpu_first = [], 0.0, 0.0, 0, 0.0
    statuses = []
    for n, message in enumerate(spec["messages"]):
        argument = QueueMessage(
            id=message["id"], body=message["content"].encode(), dequeue_count=message["dequeue_count"]
        )
        token = CURRENT.set("evaluate_target")
        began = time.perf_counter()
        try:
            evaluate(argument)
            statuses.append("ok")
        except Exception as exc:
            statuses.append(type(exc).__name__)
        finally:
            CURRENT.reset(token)
        walls.append(time.perf_counter() - began)
        if n == 0:
            done_at, rss_first, storage_first = time.time(), rss_mb(), calls.total()
            times = os.times()
            cpu_first = times.user + times.system  # the process's CPU from its start (interpreter included)
    return {
        "first_done_at": done_at,
        "import_seconds": round(imported, 3),
        "cpu_to_first_seconds": round(cpu_first, 3),
        "first_invocation_seconds": round(walls[0], 3),
        "warm_invocation_seconds": round(walls[1], 3) if len(walls) > 1 else None,
        "rss_after_first_mb": rss_first,
        "peak_rss_mb": peak_rss_mb(),
        "storage_first": storage_first,
        "statuses": statuses,
    }


# -- report ------------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _requests(r: dict[str, Any]) -> str:
    a, s = r["arm"], r["storage"]
    return (
        f"{_n(a['reads'])} ARM reads, {_n(a['graph_queries'])} Graph queries, {_n(a['tokens'])} tokens, "
        f"{_n(s['table'])} Table, {_n(s['queue'])} Queue, {_n(r['deliveries']['requests'])} deliveries"
    )


def _invocations(r: dict[str, Any]) -> str:
    parts = [f"{v['count']} {k}" + (f" ({v['failed']} failed)" if v["failed"] else "") for k, v in r["invocations"].items()]
    return ", ".join(parts)


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(scenario, measured, goal, verdict) rows of the README table."""
    out: list[tuple[str, str, str, str]] = []
    common = "wall {wall} s (work {work} s), longest invocation {longest} s, peak RSS {rss} MB; {inv}"

    def measured(r: dict[str, Any]) -> str:
        return (
            _requests(r)
            + "; "
            + common.format(
                wall=r["wall_seconds"],
                work=r["work_seconds"],
                longest=r["longest_invocation_seconds"],
                rss=r["peak_rss_mb"],
                inv=_invocations(r),
            )
            + (f"; **gave up after {report['options']['deadline']:.0f} s**" if r["timed_out"] else "")
            + "".join(
                f"; **{k['function']} reached functionTimeout ({report['function_timeout']:g} s): the host kills it "
                "and its work "
                "is lost; counts up to then**"
                for k in r["killed"]
            )
        )

    if "perimeter" in report:
        r = report["perimeter"]
        reads_ok = r["arm"]["reads"] <= r["goal_reads"]
        budget_ok = r["longest_invocation_seconds"] <= INVOCATION_BUDGET
        wall_ok = r["work_seconds"] <= max(r["goal_wall_seconds"], 0.0) or r["bucket_bound_seconds"] == 0
        out.append(
            (
                f"access-rule change, perimeter of {_n(r['members'])} accounts",
                measured(r) + f"; bucket bound {r['bucket_bound_seconds']} s",
                f"<= {_n(r['goal_reads'])} ARM reads; every invocation <= {INVOCATION_BUDGET:.0f} s; "
                f"work <= 1.2 x bucket bound ({r['goal_wall_seconds']} s)",
                f"reads {_met(reads_ok)}; budget {_met(budget_ok)}; wall {_met(wall_ok)}",
            )
        )
    if "sweep" in report:
        r = report["sweep"]
        out.append(
            (
                f"full ARM sweep, {_n(r['accounts'])} accounts ({_n(r['members'])} in a perimeter)",
                measured(r) + f"; bucket bound {r['bucket_bound_seconds']} s; changes found "
                + ", ".join(f"{k.split()[1]} {v}" for k, v in r["detected"].items()),
                f"<= {_n(r['goal_reads'])} ARM reads; every invocation <= {INVOCATION_BUDGET:.0f} s",
                f"reads {_met(r['arm']['reads'] <= r['goal_reads'])}; "
                f"budget {_met(r['longest_invocation_seconds'] <= INVOCATION_BUDGET)}",
            )
        )
    if "graph_sweep" in report:
        r = report["graph_sweep"]
        found = all(v.split("/")[0] == v.split("/")[1] for v in r["detected"].values())
        out.append(
            (
                f"Resource Graph sweep, {_n(r['accounts'])} accounts",
                measured(r) + "; changes found " + ", ".join(f"{k.split()[1]} {v}" for k, v in r["detected"].items()),
                "finds VHD and backup changes; every invocation <= " f"{INVOCATION_BUDGET:.0f} s",
                f"changes {_met(found)}; budget {_met(r['longest_invocation_seconds'] <= INVOCATION_BUDGET)}",
            )
        )
    if "storm" in report:
        r = report["storm"]
        out.append(
            (
                f"storm: {_n(r['events'])} events over {_n(r['accounts'])} accounts",
                f"{r['evaluations']} evaluations, {r['storage_calls_per_event']} storage calls per event; "
                + measured(r),
                f"<= {r['goal_evaluations']} evaluations, <= {r['goal_reads']} ARM reads, "
                f"<= {r['goal_storage_per_event']:g} storage calls per event",
                f"evaluations {_met(r['evaluations'] <= r['goal_evaluations'])}; "
                f"reads {_met(r['arm']['reads'] <= r['goal_reads'])}; "
                f"storage {_met(r['storage_calls_per_event'] <= r['goal_storage_per_event'])}",
            )
        )
    if "cold_start" in report:
        c = report["cold_start"]
        seconds, mb = FIRST_INVOCATION_GOAL
        out.append(
            (
                "first invocation in a fresh process",
                f"{c['process_to_first_evaluation_seconds']} s from process start to the first evaluation done "
                f"(import function_app {c['import_function_app_seconds']} s, the invocation "
                f"{c['first_invocation_seconds']} s, {c['arm_reads']} ARM reads for two evaluations; "
                f"{c.get('cpu_to_first_evaluation_seconds', '?')} s of CPU in all, the machine's load aside); "
                f"warm invocation {c['warm_invocation_seconds']} s; RSS {c['rss_after_first_mb']} MB "
                f"after the first, peak {c['peak_rss_mb']} MB; median of {c['runs']}",
                f"<= {seconds:g} s and <= {mb:g} MB on an idle machine",
                f"time {_met(c['process_to_first_evaluation_seconds'] <= seconds)}; "
                f"memory {_met(c['rss_after_first_mb'] <= mb)}",
            )
        )
    if "cpu" in report:
        c = report["cpu"]
        out.append(
            (
                "evaluations per CPU second, zero latency",
                f"{c['offline_per_cpu_second']} offline transport / {c['https_per_cpu_second']} HTTPS loopback",
                "",
                "",
            )
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    o = report["options"]
    load = report["load_before"]
    lines = [
        f"Written by `python -m bench.run{' --quick' if report['quick'] else ''} --write-readme` on "
        f"{report['date']} ({report['nproc']} CPUs, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"before, {report['load_after'][0]:.2f} after; {report['benchmark_seconds']:.0f} s in all; "
        f"commit {report['commit']}). ARM latency {o['latency'] * 1000:.0f} ms per request, read bucket "
        f"{ARM_BUCKET} / {ARM_RATE:g} per second, Resource Graph {GRAPH_LIMIT} queries per {GRAPH_WINDOW:g} s, "
        f"pages of {o['page_size']}, coalescing window {o['window']:g} s.",
        "",
        "| scenario | measured | goal | verdict |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(report)),
        "",
        "*wall*: from the trigger to the end of the last invocation it caused; *work*: from the start of the "
        "first invocation that is not intake (the timer, or a queue message after the coalescing window) to the "
        "last one's end; *bucket bound*: "
        f"(reads - {ARM_BUCKET}) / {ARM_RATE:g} s, the least ARM allows; Table and Queue calls are the app's "
        "(the host's polling is not counted); *peak RSS*: the app process's VmHWM. "
        "Details by path template and operation: `bench/report.json`.",
        "",
    ]
    return "\n".join(lines)


def write_readme(text: str, path: Path = README) -> None:
    content = path.read_text(encoding="utf-8")
    pattern = re.compile(r"(<!-- bench:start -->\n).*?(<!-- bench:end -->)", re.S)
    if not pattern.search(content):
        raise SystemExit(f"{path} has no <!-- bench:start --> / <!-- bench:end --> markers")
    path.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), content), encoding="utf-8")


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(options: Options, only: set[str], quick: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(),
        "nproc": os.cpu_count(),
        "load_before": list(os.getloadavg()),
        "commit": _commit(),
        "quick": quick,
        "options": asdict(options),
        "function_timeout": options.function_timeout or host_settings()["function_timeout"],
    }
    steps = {
        "perimeter": perimeter_change,
        "sweep": full_sweep,
        "graph_sweep": graph_sweep,
        "storm": storm,
        "cold_start": cold_start,
        "cpu": lambda o: cpu(),
    }
    for name in SCENARIOS:
        if name in only:
            began = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            report[name] = steps[name](options)
            print(f"[bench] {name}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    report["load_after"] = list(os.getloadavg())
    report["benchmark_seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every scenario at a tenth of the size")
    parser.add_argument("--perimeter-accounts", type=int)
    parser.add_argument("--sweep-accounts", type=int)
    parser.add_argument("--storm-events", type=int)
    parser.add_argument("--storm-accounts", type=int)
    parser.add_argument("--latency-ms", type=float)
    parser.add_argument("--window-seconds", type=float, help="NSP_DRIFT_COALESCE_SECONDS (default 30, the app's)")
    parser.add_argument("--page-size", type=int, help="ARM list page size (nextLink)")
    parser.add_argument("--cold-runs", type=int)
    parser.add_argument("--deadline-seconds", type=float, help="give a scenario up after this long")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "report.json"))
    parser.add_argument("--write-readme", action="store_true", help="replace the README's bench section")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, spec_path = args.child
        spec = json.loads(Path(spec_path).read_text())
        result = child_scenario(spec) if mode == "scenario" else child_cold(spec)
        print(json.dumps(result), flush=True)
        os._exit(0)  # the app's clients and loop die with the process, as a recycled worker's do
    # Stopped (SIGTERM): unwind, so Azurite and the servers stop with the benchmark.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    options = QUICK if args.quick else Options()
    overrides = {
        "perimeter_accounts": args.perimeter_accounts,
        "sweep_accounts": args.sweep_accounts,
        "storm_events": args.storm_events,
        "storm_accounts": args.storm_accounts,
        "latency": None if args.latency_ms is None else args.latency_ms / 1000,
        "window": args.window_seconds,
        "page_size": args.page_size,
        "cold_runs": args.cold_runs,
        "deadline": args.deadline_seconds,
    }
    options = replace(options, **{k: v for k, v in overrides.items() if v is not None})
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        parser.error(f"--only: unknown scenario(s) {', '.join(sorted(unknown))}")
    report = run(options, only, quick=args.quick)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    print(text)
    if args.write_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
