"""Chaos: the sample scenario against an ARM that fails 20% of requests (429 with
Retry-After, 500, 503, connection resets, responses slower than the client timeout,
truncated JSON). Every expected transition comes out exactly once, none is invented, and an
evaluation that exhausts its retries is re-queued, never dropped."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.run import live
from bench.server import Faults, serving
from shared.adapters import runtime
from shared.adapters.estate import Estate
from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.core.config import RulesConfig
from shared.core.targeting import Scope
from shared.entrypoints.replay import MemoryQueue, record_baseline_estate
from shared.service.pipeline import CollectingSink, Pipeline, WindowStatus
from shared.wiring import readers_for
from tests.test_pipeline import EXPECTED_SAMPLE, SUB, triples

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"
REPORT = Path(__file__).resolve().parents[1] / "bench" / "chaos-report.json"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_twenty_percent_faults_exactly_once(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path / "s.sqlite"))
    record_baseline_estate(Estate.load(SAMPLES / "estate.json"), store, RulesConfig())
    events = json.loads((SAMPLES / "events.json").read_text())
    faults = Faults(
        throttle=0.04,
        server_error=0.04,
        unavailable=0.03,
        reset=0.03,
        truncated=0.03,
        slow=0.03,
        slow_seconds=2.5,
        seed=11,
    )
    rounds: list[int] = []
    with serving(Estate.load(SAMPLES / "estate-changed.json"), latency=0.0, faults=faults) as server:
        clients = live(server, read_timeout=1.0)  # a slow response is beyond the client's timeout
        queue, sink = MemoryQueue(), CollectingSink()
        clock = Clock()
        pipeline = Pipeline(
            store=store,
            outbox=sink,
            enqueue=queue.send,
            config=RulesConfig(),
            scope=Scope((SUB,)),
            window_seconds=30.0,
            clock=clock,
        )
        pipeline.intake(events)
        # The queue brings every message back when it is due: here, in rounds, the clock moved on
        # past each failed window's back-off between rounds.
        for _ in range(20):
            pending = queue.drain()
            if not pending:
                break
            failed: list[Any] = []

            async def attempt(batch: list[Any] = pending, failed: list[Any] = failed) -> None:
                readers = readers_for(clients)
                for target in batch:
                    result = await pipeline.evaluate_window(target, readers)
                    if result.status is WindowStatus.RETRY:
                        failed.append(target)  # backing off, its retry queued

            runtime.run(attempt())
            rounds.append(len(failed))
            clock.now += 86_400.0
        runtime.run(clients.close())
    assert queue.drain() == [], "an evaluation was dropped"
    assert store.overdue_pending(1e12, 0.0) == [], "a window was left pending"
    found = triples(sink.transitions)
    assert set(found) == EXPECTED_SAMPLE  # none missing, none invented
    keys = [(t.key, t.kind.value) for t in sink.transitions]
    assert len(keys) == len(set(keys))  # none duplicated
    assert sum(faults.injected.values()) > 0
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "requests": server.total(),
                "faults_injected": dict(faults.injected),
                "failed_evaluations_per_round": rounds,
                "transitions": len(sink.transitions),
                "lost": 0,
                "duplicated": len(keys) - len(set(keys)),
            },
            indent=2,
        )
        + "\n"
    )
