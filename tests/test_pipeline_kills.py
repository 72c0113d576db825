"""Workers killed mid-evaluation lose no window (issue 11, defect 2).

Thirty accounts change (SFTP enabled), one event each, so thirty windows and thirty queue
messages on a real Azurite. Three worker processes (tests/kill_worker.py) take the messages the
way the Functions host does; each one SIGKILLs itself at a point drawn from a seeded generator
(before its N-th state-store call: after a claim, between the outbox and the state write, ...)
and a new worker replaces it, until the kill budget is spent. Then the Resource Graph sweep runs
and a last worker drains the queue.

Every window must have been evaluated: its account's "opened" delivery carries the window's
event id (a change found by the sweep instead is attributed to the sweep, not to the events that
made it), and no window is left pending.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import runtime
from shared.adapters.estate import Estate
from shared.adapters.notify.destinations import parse_destinations
from shared.adapters.queue import EvaluationQueue
from shared.adapters.state.table_store import TableStateStore
from shared.core.config import RulesConfig
from shared.core.targeting import Scope
from shared.entrypoints.replay import record_baseline_estate
from shared.service.dispatch import OutboxSink
from shared.service.pipeline import Pipeline
from shared.wiring import EstateClients, readers_for
from tests.azurite import Azurite, unique_name
from tests.test_pipeline import storm_events

ROOT = Path(__file__).resolve().parents[1]
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
WINDOWS = 30
WORKERS = 3
KILLS = 12
VISIBILITY = 3  # seconds a received message stays invisible (the host renews it while it runs)
LEASE = 2.0  # seconds a claim holds a window (shorter than the visibility: a reappearing message finds it lapsed)
IDLE = 8.0  # a worker exits after this long without a message


def storm_data(accounts: int) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``accounts`` copies of the clean sample account (in the perimeter), before and after SFTP
    (as tests/test_pipeline.py's storm_estates, as plain data a worker can load)."""
    base = json.loads((ROOT / "shared" / "samples" / "estate.json").read_text())
    template_id = next(k for k in base if k.endswith("/storageAccounts/stcontosoclean01"))
    config_id = next(k for k in base if "stcontosoclean01/networkSecurityPerimeterConfigurations/" in k)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    ids = []
    for i in range(accounts):
        name = f"stkill{i:03d}"
        for source in (template_id, config_id):
            body = json.loads(json.dumps(base[source]).replace("stcontosoclean01", name))
            before[body["id"]] = body
            changed = json.loads(json.dumps(body))
            if "/networkSecurityPerimeterConfigurations/" not in body["id"]:
                changed["properties"]["isSftpEnabled"] = True
                ids.append(body["id"])
            after[changed["id"]] = changed
    return before, after, ids


def spawn(config: dict[str, Any], path: Path) -> subprocess.Popen[bytes]:
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.kill_worker", str(path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.azurite
@pytest.mark.slow
def test_workers_killed_at_random_points_lose_no_window(azurite: Azurite, tmp_path: Path) -> None:
    before_data, after_data, ids = storm_data(WINDOWS)
    before, after = Estate(before_data), Estate(after_data)
    estate_path = tmp_path / "after.json"
    estate_path.write_text(json.dumps(after_data))
    prefix, queue_name = unique_name("k"), unique_name("q")
    store = TableStateStore.from_connection_string(azurite.connection_string, prefix)
    queue = EvaluationQueue.from_connection_string(azurite.connection_string, queue_name)
    record_baseline_estate(before, store, RulesConfig())
    events = storm_events(ids, WINDOWS)  # one event per account: one window each
    routes = parse_destinations([{"name": "siem", "type": "webhook", "url_setting": "U", "secret_setting": "S"}])
    pipeline = Pipeline(
        store=store,
        outbox=OutboxSink(store, routes),
        enqueue=queue.send,
        config=RulesConfig(),
        scope=Scope((SUB,)),
        window_seconds=0.0,
        lease_seconds=LEASE,
    )
    assert pipeline.intake(events).windows_opened == WINDOWS

    rng = random.Random(20261125)
    base = {
        "connection": azurite.connection_string,
        "prefix": prefix,
        "queue": queue_name,
        "estate": str(estate_path),
        "visibility": VISIBILITY,
        "idle": IDLE,
        "lease": LEASE,
    }
    kills_left, killed, spawned = KILLS, 0, 0
    workers: list[subprocess.Popen[bytes]] = []

    def start(kill: bool) -> None:
        nonlocal spawned, kills_left
        kill_at = rng.randint(1, 25) if kill and kills_left > 0 else 0
        kills_left -= 1 if kill_at else 0
        spawned += 1
        workers.append(spawn({**base, "kill_at": kill_at}, tmp_path / f"worker{spawned}.json"))

    for _ in range(WORKERS):
        start(kill=True)
    deadline = time.monotonic() + 300
    while workers and time.monotonic() < deadline:
        time.sleep(0.2)
        for worker in [w for w in workers if w.poll() is not None]:
            workers.remove(worker)
            if worker.returncode == -9:  # SIGKILL: a new instance takes its place
                killed += 1
                start(kill=True)
    assert not workers, "workers did not finish"

    # The frequent sweep, then a worker to evaluate what it re-queued.
    runtime.run(pipeline.sweep([SUB], readers_for(EstateClients(after)), use_graph=True))
    last = spawn({**base, "kill_at": 0}, tmp_path / "last.json")
    assert last.wait(120) == 0

    event_of = {ids[n].lower(): events[n]["id"] for n in range(WINDOWS)}
    evaluated = set()
    for delivery, _ in store.due_deliveries(1e12, limit=10_000):
        transition = delivery.transition
        if transition["rule"] == "sftp-enabled" and transition["transition"] == "opened":
            account = transition["resource"].lower()
            if event_of[account] in transition["event_ids"]:
                evaluated.add(account)
    lost = WINDOWS - len(evaluated)
    print(f"{killed} workers killed, {spawned + 1} started: {lost} of {WINDOWS} windows lost")
    assert killed >= KILLS // 2
    assert lost == 0, f"{lost} of {WINDOWS} windows were never evaluated"
    assert store.overdue_pending(1e12, 0.0) == []
