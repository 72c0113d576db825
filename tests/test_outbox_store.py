"""The outbox in both stores: insert-if-absent, due ordering, conditional updates, tasks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shared.notify.base import Delivery, DeliveryStatus, TaskRef
from shared.state.base import ConflictError
from tests.azurite import unique_name


@pytest.fixture(params=["sqlite", "table"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        from shared.state.sqlite_store import SqliteStateStore

        made: Any = SqliteStateStore(str(tmp_path / "o.sqlite"))
    else:
        from shared.state.table_store import TableStateStore

        made = TableStateStore.from_connection_string(
            request.getfixturevalue("azurite").connection_string, unique_name("o")
        )
    yield made
    made.close()


def delivery(n: int, at: float = 0.0, size: int = 10) -> Delivery:
    transition = {"transition": "opened", "rule": "sftp-enabled", "key": f"k{n}", "blob": "x" * size}
    return Delivery("siem", f"idem-{n}", transition, created_at=float(n), next_attempt_at=at)


def test_insert_if_absent_and_done_is_never_reset(store: Any) -> None:
    assert store.add_deliveries([delivery(1), delivery(2)]) == 2
    assert store.add_deliveries([delivery(1)]) == 0
    (first, etag), _ = store.due_deliveries(10.0)
    store.update_delivery(replace(first, status=DeliveryStatus.DONE), etag)
    assert store.add_deliveries([delivery(1)]) == 0
    got = store.get_delivery(delivery(1).delivery_id)
    assert got is not None and got[0].status is DeliveryStatus.DONE
    assert [d.idempotency_key for d, _ in store.due_deliveries(10.0)] == ["idem-2"]
    assert store.count_deliveries() == 2 and store.count_deliveries(DeliveryStatus.DONE) == 1


def test_due_order_limit_and_future_attempts(store: Any) -> None:
    store.add_deliveries([delivery(3), delivery(1), delivery(2), delivery(4, at=500.0)])
    assert [d.idempotency_key for d, _ in store.due_deliveries(100.0, limit=2)] == ["idem-1", "idem-2"]
    assert len(store.due_deliveries(100.0)) == 3
    assert len(store.due_deliveries(600.0)) == 4


def test_conditional_update_has_one_winner(store: Any) -> None:
    store.add_deliveries([delivery(1)])
    ((d, etag),) = store.due_deliveries(10.0)
    store.update_delivery(replace(d, attempts=1), etag)
    with pytest.raises(ConflictError):
        store.update_delivery(replace(d, attempts=1), etag)


def test_large_payload_round_trips(store: Any) -> None:
    big = delivery(1, size=300_000)
    store.add_deliveries([big])
    ((d, _),) = store.due_deliveries(10.0)
    assert d.transition == big.transition


def test_tasks_upsert(store: Any) -> None:
    assert store.get_task("boards", "k1") is None
    store.put_task(TaskRef("boards", "k1", "17", "https://x/17"))
    store.put_task(TaskRef("boards", "k1", "17", "https://x/17", "closed"))
    task = store.get_task("boards", "k1")
    assert task is not None and task.state == "closed" and task.external_id == "17"


def test_racing_writers_store_each_delivery_once(store: Any) -> None:
    batch = [delivery(n) for n in range(20)]
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.append(store.add_deliveries(batch))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 20 and store.count_deliveries() == 20
