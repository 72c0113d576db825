"""The order of the state write and the outbox record (shared/service/pipeline.py, "Ordering").

The state write carries the transitions it makes true; they are recorded in the outbox after it.
A worker that vanishes between the two (or between the record and clearing them from the row)
must neither lose an alert nor send one twice: the next evaluation of the row records what it
carries, and a second record of the same transition is the same delivery.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import runtime
from shared.adapters.estate import Estate
from shared.adapters.notify.destinations import parse_destinations
from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.core.changes import Provenance, Target, TargetKind
from shared.core.config import RulesConfig
from shared.core.state.carried import transition_from_record, transition_record
from shared.core.targeting import Scope
from shared.entrypoints.replay import MemoryQueue, record_baseline_estate, replay
from shared.service.dispatch import OutboxSink
from shared.service.pipeline import CollectingSink, Pipeline, WindowStatus
from shared.wiring import EstateClients, readers_for

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
CLEAN = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/stcontosoclean01"
LEASE = 60.0


class Killed(BaseException):
    """The process vanished (SIGKILL): no except clause of the pipeline runs for it."""


class DiesAfter:
    """The store, except that the process dies right after the ``n``-th successful ``put_account``."""

    def __init__(self, inner: Any, n: int) -> None:
        self._inner = inner
        self._left = n

    def put_account(self, *args: Any) -> Any:
        etag = self._inner.put_account(*args)
        self._left -= 1
        if self._left == 0:
            raise Killed
        return etag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStateStore]:
    made = SqliteStateStore(str(tmp_path / "state.sqlite"))
    yield made
    made.close()


@pytest.mark.parametrize(
    ("dies_after", "where"),
    [(1, "between the state write and the outbox record"), (2, "between the outbox record and the clearing write")],
)
def test_a_worker_vanishing_around_the_state_write_neither_loses_nor_duplicates(
    store: SqliteStateStore, dies_after: int, where: str
) -> None:
    record_baseline_estate(Estate.load(SAMPLES / "estate.json"), store, RulesConfig())
    routes = parse_destinations([{"name": "siem", "type": "webhook", "url_setting": "U", "secret_setting": "S"}])
    clock, queue = Clock(), MemoryQueue()
    readers = readers_for(EstateClients(Estate.load(SAMPLES / "estate-changed.json")))  # SFTP now on

    def worker(on: Any) -> Pipeline:
        return Pipeline(
            store=on,
            outbox=OutboxSink(store, routes),
            enqueue=queue.send,
            config=RulesConfig(),
            scope=Scope((SUB,)),
            window_seconds=30.0,
            clock=clock,
            lease_seconds=LEASE,
        )

    target = Target(TargetKind.ACCOUNT, CLEAN)
    store.add_pending(target, Provenance(event_ids=("e-1",)), 30.0, clock.now)
    clock.now += 30
    with pytest.raises(Killed):
        runtime.run(worker(DiesAfter(store, dies_after)).evaluate_window(target, readers))
    recorded = store.count_deliveries()
    assert recorded == (0 if dies_after == 1 else 1), where

    clock.now += LEASE + 1  # the lease lapses; the queue delivers the message again
    result = runtime.run(worker(store).evaluate_window(target, readers))
    assert result.status is WindowStatus.DONE
    assert result.transitions == ()  # the state was already written: nothing new is decided ...
    assert store.count_deliveries() == 1  # ... and the carried "opened" was recorded exactly once
    ((delivery, _),) = store.due_deliveries(1e12)
    assert (delivery.transition["rule"], delivery.transition["transition"]) == ("sftp-enabled", "opened")
    assert delivery.transition["event_ids"] == ["e-1"]  # attributed to the window's event
    stored = store.get_account(CLEAN)
    assert stored is not None and stored.value.pending_transitions == ()  # cleared once recorded


def test_carried_transitions_keep_their_identity() -> None:
    result = replay(SAMPLES / "events.json", SAMPLES / "estate-changed.json", baseline_path=SAMPLES / "estate.json")
    assert len(result.transitions) >= 9  # every kind: opened, resolved, changed (findings, associations, rules)
    for transition in result.transitions:
        record = json.loads(json.dumps(transition_record(transition)))  # as stored in the row
        again = transition_from_record(record)
        assert again == transition
        assert again.idempotency_key == transition.idempotency_key


def test_an_unchanged_evaluation_still_records_what_it_observed(store: SqliteStateStore) -> None:
    """The write that lets an older read lose: every evaluation stores when its read began."""
    estate = Estate.load(SAMPLES / "estate.json")
    record_baseline_estate(estate, store, RulesConfig())
    before = store.get_account(CLEAN)
    clock = Clock()
    pipeline = Pipeline(
        store=store,
        outbox=CollectingSink(),
        enqueue=MemoryQueue().send,
        config=RulesConfig(),
        scope=Scope((SUB,)),
        clock=clock,
    )
    result = runtime.run(
        pipeline.evaluate_account(CLEAN, Provenance(source="sweep"), readers_for(EstateClients(estate)))
    )
    after = store.get_account(CLEAN)
    assert result.transitions == ()
    assert before is not None and after is not None and after.etag != before.etag
    assert after.value.observed_at == clock.now


def test_a_deleted_accounts_resolutions_carried_by_its_tombstone_are_recorded_by_the_sweep(
    store: SqliteStateStore,
) -> None:
    """A sweep (no window to retry it) dies between the tombstone write and the outbox record:
    the tombstone stays listed while it carries them, so the next sweep records them, once."""
    record_baseline_estate(Estate.load(SAMPLES / "estate.json"), store, RulesConfig())
    sftp = CLEAN.replace("stcontosoclean01", "stcontososftp01")
    data = json.loads((SAMPLES / "estate.json").read_text())
    gone = Estate({k: v for k, v in data.items() if "/stcontososftp01" not in k.lower()})
    routes = parse_destinations([{"name": "siem", "type": "webhook", "url_setting": "U", "secret_setting": "S"}])

    def sweeper(on: Any) -> Pipeline:
        return Pipeline(
            store=on,
            outbox=OutboxSink(store, routes),
            enqueue=MemoryQueue().send,
            config=RulesConfig(),
            scope=Scope((SUB,)),
        )

    with pytest.raises(Killed):
        runtime.run(
            sweeper(DiesAfter(store, 1)).evaluate_account(
                sftp, Provenance(source="sweep"), readers_for(EstateClients(gone))
            )
        )
    stored = store.get_account(sftp)
    assert stored is not None and stored.value.is_tombstone and stored.value.pending_transitions
    assert store.count_deliveries() == 0 and sftp in store.all_account_ids()

    report = runtime.run(sweeper(store).sweep([SUB], readers_for(EstateClients(gone))))
    assert report.failed == []
    ((delivery, _),) = store.due_deliveries(1e12)
    assert (delivery.transition["rule"], delivery.transition["transition"]) == ("sftp-enabled", "resolved")
    assert sftp not in store.all_account_ids()  # recorded: the tombstone is no longer swept
    runtime.run(sweeper(store).sweep([SUB], readers_for(EstateClients(gone))))
    assert store.count_deliveries() == 1
