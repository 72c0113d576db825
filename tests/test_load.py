"""Load: 10,000 events through the real pipeline (Table storage on Azurite), 8 intake threads as
the Functions worker would run them. Nothing lost, nothing duplicated; memory reported.

Memory is read from the process (resident set and its high-water mark), not traced: tracemalloc
hooks every allocation and made the intake three times slower (about 2/3 of the whole suite's time);
``python -m bench.run`` measures traced peaks in a run of its own."""

from __future__ import annotations

import json
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.adapters import runtime
from shared.adapters.state.table_store import TableStateStore
from shared.adapters.storage_http import storage_transport
from shared.core.config import RulesConfig
from shared.core.targeting import Scope
from shared.entrypoints.replay import MemoryQueue, record_baseline_estate
from shared.service.pipeline import CollectingSink, Pipeline, WindowStatus
from shared.wiring import EstateClients, readers_for
from tests.azurite import Azurite, unique_name
from tests.test_pipeline import SUB, storm_estates, storm_events

REPORT = Path(__file__).resolve().parents[1] / "bench" / "load-report.json"


def resident_mb() -> float | None:
    """This process's resident set now (Linux), None where /proc is not there."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize() / 2**20


@pytest.mark.slow
@pytest.mark.azurite
def test_ten_thousand_events_none_lost_none_duplicated(azurite: Azurite) -> None:
    accounts, events_total = 200, 10_000
    before, after, ids = storm_estates(accounts)
    # Wired as the app wires it (shared.entrypoints.app.build_context): one requests session per process with
    # the environment resolved once per host, not merged again for each of the 44,000 calls.
    store = TableStateStore.from_connection_string(
        azurite.connection_string, unique_name("load"), transport=storage_transport()
    )
    record_baseline_estate(before, store, RulesConfig())
    events = storm_events(ids, events_total)
    queue, sink = MemoryQueue(), CollectingSink()
    pipeline = Pipeline(
        store=store, outbox=sink, enqueue=queue.send, config=RulesConfig(), scope=Scope((SUB,)), window_seconds=30.0
    )
    clients = EstateClients(after)

    resident_before = resident_mb()
    started = time.monotonic()
    chunks = [events[i : i + 50] for i in range(0, len(events), 50)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        reports = list(pool.map(pipeline.intake, chunks))
    intake_seconds = time.monotonic() - started
    accepted = sum(r.accepted for r in reports)
    opened = sum(r.windows_opened for r in reports)

    targets = queue.drain()

    async def evaluate_all() -> None:
        readers = readers_for(clients)
        for target in targets:
            result = await pipeline.evaluate_window(target, readers)
            assert result.status is WindowStatus.DONE, result.error

    evaluate_started = time.monotonic()
    runtime.run(evaluate_all())
    evaluate_seconds = time.monotonic() - evaluate_started
    resident_after = resident_mb()

    assert accepted == events_total  # none lost
    assert opened == len(targets) == accounts  # one window per account, coalesced
    keys = [(t.key, t.kind.value) for t in sink.transitions]
    assert len(keys) == len(set(keys)) == accounts  # none duplicated
    # Every event is attributed to its evaluation, listed by id or absorbed into its open window
    # (which already named its actor and operation: shared.core.state.pending.absorbs).
    seen = {e for t in sink.transitions for e in t.provenance.event_ids}
    absorbed = sum(r.absorbed for r in reports)
    assert len(seen) + absorbed == events_total and absorbed >= events_total - 2 * accounts * 8
    assert all(t.provenance.changed_by == "alice@contoso.com from 203.0.113.10" for t in sink.transitions)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(
        json.dumps(
            {
                "events": events_total,
                "accounts": accounts,
                "intake_seconds": round(intake_seconds, 2),
                "events_per_second": round(events_total / intake_seconds, 1),
                "evaluations": len(targets),
                "transitions": len(sink.transitions),
                "lost": events_total - accepted,
                "duplicated": len(keys) - len(set(keys)),
                "evaluate_seconds": round(evaluate_seconds, 2),
                "resident_growth_mb": (
                    round(resident_after - resident_before, 1)
                    if resident_after is not None and resident_before is not None
                    else None
                ),
                "peak_resident_mb_of_the_test_process": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
            },
            indent=2,
        )
        + "\n"
    )
