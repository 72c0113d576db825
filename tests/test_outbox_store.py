"""The outbox in both stores (Table storage on Azurite, SQLite): insert-if-absent, the due sweep
and its pending index, conditional updates, large payloads, tasks, and the delivery/task codec."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.state import codec
from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.adapters.state.table_store import TableStateStore
from shared.core.notify.base import Delivery, DeliveryStatus, OutboxStore, TaskRef
from shared.core.state.base import ConflictError
from tests.azurite import Azurite, unique_name

StoreFactory = Callable[[], OutboxStore]

# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(params=[pytest.param("table", marks=pytest.mark.azurite), "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_factory(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Each call is another worker (its own client or connection) on the same storage."""
    made: list[TableStateStore | SqliteStateStore] = []
    if backend == "table":
        server: Azurite = request.getfixturevalue("azurite")
        prefix = unique_name("o")  # fresh tables per test

        def make() -> OutboxStore:
            made.append(TableStateStore.from_connection_string(server.connection_string, prefix))
            return made[-1]
    else:

        def make() -> OutboxStore:
            made.append(SqliteStateStore(tmp_path / "state" / "outbox.db"))
            return made[-1]

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> OutboxStore:
    return store_factory()


def delivery(n: int, at: float = 0.0, destination: str = "siem", **transition: Any) -> Delivery:
    payload = {"transition": "opened", "rule": "sftp-enabled", "key": f"k{n}", **transition}
    return Delivery(destination, f"idem-{n}", payload, created_at=1000.0 + n, next_attempt_at=at)


def keys(found: list[tuple[Delivery, str]]) -> list[str]:
    return [d.idempotency_key for d, _ in found]


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together, so they really race."""
    barrier = threading.Barrier(count)

    def run(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def access_rules(count: int, seed: int) -> list[dict[str, Any]]:
    """An access-rule diff that gzip cannot squash: random prefixes and subscription ids."""
    rng = random.Random(seed)
    return [
        {
            "name": f"rule-{i}",
            "direction": rng.choice(["Inbound", "Outbound"]),
            "addressPrefixes": [f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"],
            "subscriptions": [{"id": f"/subscriptions/{rng.randbytes(16).hex()}"} for _ in range(4)],
        }
        for i in range(count)
    ]


# -- insert-if-absent -------------------------------------------------------------------------------


def test_same_delivery_is_stored_once(store: OutboxStore) -> None:
    assert store.add_deliveries([delivery(1)]) == 1
    assert store.add_deliveries([delivery(1)]) == 0
    assert store.add_deliveries([delivery(1), delivery(2), delivery(2)]) == 1
    assert store.count_deliveries() == 2
    assert keys(store.due_deliveries(2000.0)) == ["idem-1", "idem-2"]


def test_done_delivery_re_added_stays_done(store: OutboxStore) -> None:
    store.add_deliveries([delivery(1), delivery(2)])
    got = store.get_delivery(delivery(1).delivery_id)
    assert got is not None
    store.update_delivery(replace(got[0], status=DeliveryStatus.DONE, attempts=1, last_status=200), got[1])

    assert store.add_deliveries([delivery(1)]) == 0  # the same transition decided again
    again = store.get_delivery(delivery(1).delivery_id)
    assert again is not None
    assert again[0].status is DeliveryStatus.DONE and again[0].attempts == 1 and again[0].last_status == 200
    assert keys(store.due_deliveries(2000.0)) == ["idem-2"]


def test_unknown_delivery_reads_as_none(store: OutboxStore) -> None:
    assert store.get_delivery(delivery(9).delivery_id) is None
    assert store.get_delivery("not-a-delivery-id") is None
    assert store.due_deliveries(2000.0) == [] and store.count_deliveries() == 0


# -- the due sweep ----------------------------------------------------------------------------------


def test_due_is_oldest_first_and_limited(store: OutboxStore) -> None:
    store.add_deliveries([delivery(3), delivery(1), delivery(5), delivery(2), delivery(4)])
    assert keys(store.due_deliveries(2000.0, limit=2)) == ["idem-1", "idem-2"]
    assert keys(store.due_deliveries(2000.0)) == ["idem-1", "idem-2", "idem-3", "idem-4", "idem-5"]
    assert store.due_deliveries(2000.0, limit=0) == []


def test_future_attempt_is_not_due_until_its_time(store: OutboxStore) -> None:
    at = 1_764_000_000.1234565  # sub-microsecond digits that 6 decimals would round down: "le" must be exact
    store.add_deliveries([delivery(1, at=at), delivery(2, at=100.0)])
    assert keys(store.due_deliveries(500.0)) == ["idem-2"]
    assert keys(store.due_deliveries(at - 1e-6)) == ["idem-2"]
    assert keys(store.due_deliveries(at)) == ["idem-1", "idem-2"]


def test_finished_deliveries_leave_the_sweep_and_a_retry_rejoins_it(store: OutboxStore) -> None:
    store.add_deliveries([delivery(n) for n in range(1, 5)])
    (d1, e1), (d2, e2), (d3, e3), _ = store.due_deliveries(2000.0)
    store.update_delivery(replace(d1, status=DeliveryStatus.DONE), e1)
    failed_etag = store.update_delivery(replace(d2, status=DeliveryStatus.FAILED, last_status=400), e2)
    store.update_delivery(replace(d3, attempts=1, next_attempt_at=5000.0), e3)  # a retry later
    assert keys(store.due_deliveries(2000.0)) == ["idem-4"]
    assert keys(store.due_deliveries(6000.0)) == ["idem-3", "idem-4"]

    # Settling a finished delivery again (no index row to remove) still works, conditionally.
    refailed = store.update_delivery(replace(d2, status=DeliveryStatus.FAILED, last_error="again"), failed_etag)
    with pytest.raises(ConflictError):
        store.update_delivery(replace(d2, status=DeliveryStatus.DONE), failed_etag)
    # An operator's requeue puts a failed delivery back into the sweep.
    store.update_delivery(replace(d2, status=DeliveryStatus.PENDING, next_attempt_at=0.0), refailed)
    assert keys(store.due_deliveries(2000.0)) == ["idem-2", "idem-4"]


def test_sweep_reads_only_pending_rows(backend: str, store: OutboxStore, request: pytest.FixtureRequest) -> None:
    """The design guarantee behind due_deliveries: done/failed history is not scanned."""
    store.add_deliveries([delivery(n) for n in range(6)])
    for d, etag in store.due_deliveries(2000.0, limit=4):
        store.update_delivery(replace(d, status=DeliveryStatus.DONE), etag)
    assert store.count_deliveries(DeliveryStatus.DONE) == 4

    if backend == "table":
        assert isinstance(store, TableStateStore)
        server: Azurite = request.getfixturevalue("azurite")
        with TableServiceClient.from_connection_string(server.connection_string) as service:
            table = service.get_table_client(store._outbox_table)
            index = list(table.query_entities("PartitionKey eq 'delivery' and RowKey ge '~due|' and RowKey lt '~due}'"))
        assert sorted(row["DeliveryId"] for row in index) == sorted(delivery(n).delivery_id for n in (4, 5))
    else:
        db = sqlite3.connect(store_path(store))
        plan = " ".join(
            str(row[-1])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT data, etag FROM deliveries INDEXED BY deliveries_pending"
                " WHERE status = 'pending' AND next_attempt_at <= 1 ORDER BY created_at, id LIMIT 5"
            )
        )
        db.close()
        assert "deliveries_pending" in plan and "TEMP B-TREE" not in plan  # index order, no sort
    assert keys(store.due_deliveries(2000.0)) == ["idem-4", "idem-5"]


@pytest.mark.azurite
def test_orphan_index_row_is_dropped_by_the_sweep(azurite: Azurite) -> None:
    """An index row whose delivery was deleted by hand (Storage Explorer) must not haunt every sweep."""
    store = TableStateStore.from_connection_string(azurite.connection_string, unique_name("o"))
    store.add_deliveries([delivery(1), delivery(2)])
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        table = service.get_table_client(store._outbox_table)
        table.delete_entity("delivery", delivery(1).delivery_id)
        assert keys(store.due_deliveries(2000.0)) == ["idem-2"]
        index = list(table.query_entities("PartitionKey eq 'delivery' and RowKey ge '~due|' and RowKey lt '~due}'"))
    assert [row["DeliveryId"] for row in index] == [delivery(2).delivery_id]
    store.close()


def store_path(store: OutboxStore) -> str:
    assert isinstance(store, SqliteStateStore)
    return store._path


# -- conditional updates ------------------------------------------------------------------------------


def test_two_workers_leasing_the_same_delivery_one_wins(store_factory: StoreFactory) -> None:
    workers = [store_factory(), store_factory()]
    workers[0].add_deliveries([delivery(1)])
    ((due, etag),) = workers[0].due_deliveries(2000.0)

    def lease(i: int) -> str | None:
        try:
            return workers[i].update_delivery(replace(due, attempts=1, next_attempt_at=2120.0 + i), etag)
        except ConflictError:
            return None

    results = in_threads(2, lease)
    winners = [i for i, new_etag in enumerate(results) if new_etag is not None]
    assert len(winners) == 1
    stored = workers[0].get_delivery(due.delivery_id)
    assert stored is not None
    assert stored == (replace(due, attempts=1, next_attempt_at=2120.0 + winners[0]), results[winners[0]])
    assert workers[1].due_deliveries(2000.0) == []  # leased: not due again until the lease ends
    with pytest.raises(ConflictError):
        workers[1].update_delivery(replace(due, status=DeliveryStatus.DONE), etag)  # the stale ETag


def test_update_of_an_absent_delivery_is_a_conflict(store: OutboxStore) -> None:
    store.add_deliveries([delivery(2)])
    stored = store.get_delivery(delivery(2).delivery_id)
    assert stored is not None
    for status in DeliveryStatus:  # a well-formed ETag, but of another row
        with pytest.raises(ConflictError):
            store.update_delivery(replace(delivery(1), status=status), stored[1])
    assert store.get_delivery(delivery(1).delivery_id) is None and store.count_deliveries() == 1


# -- payloads -------------------------------------------------------------------------------------------


def test_large_transition_round_trips(backend: str, store: OutboxStore, request: pytest.FixtureRequest) -> None:
    rules = access_rules(960, seed=7)
    big = delivery(1, before={"rules": rules[:480]}, after={"rules": rules[480:]}, note="Zürich ✓")
    assert 300_000 < len(codec.delivery_to_json(big)) < 330_000
    assert store.add_deliveries([big]) == 1
    if backend == "table":  # really chunked: gzip output over more than one 64 000-byte property
        assert isinstance(store, TableStateStore)
        server: Azurite = request.getfixturevalue("azurite")
        with TableServiceClient.from_connection_string(server.connection_string) as service:
            row = service.get_table_client(store._outbox_table).get_entity("delivery", big.delivery_id)
        assert row["Enc"] == "gzip" and row["Chunks"] > 1
    ((got, etag),) = store.due_deliveries(2000.0)
    assert got == big and got.transition == big.transition

    retried = replace(big, attempts=1, last_status=503, last_error="HTTP 503", next_attempt_at=1500.0)
    new_etag = store.update_delivery(retried, etag)
    assert store.get_delivery(big.delivery_id) == (retried, new_etag)


# -- tasks ------------------------------------------------------------------------------------------------


def test_tasks_upsert_and_get(store: OutboxStore) -> None:
    assert store.get_task("boards", "k1") is None
    store.put_task(TaskRef("boards", "k1", "17", "https://dev.azure.com/x/17"))
    store.put_task(TaskRef("issues", "k1", "4", "https://github.com/x/y/issues/4"))
    store.put_task(TaskRef("boards", "k1", "17", "https://dev.azure.com/x/17", "closed"))
    assert store.get_task("boards", "k1") == TaskRef("boards", "k1", "17", "https://dev.azure.com/x/17", "closed")
    assert store.get_task("issues", "k1") == TaskRef("issues", "k1", "4", "https://github.com/x/y/issues/4")
    assert store.get_task("boards", "k2") is None
    reopened = TaskRef("boards", "k1", "17", "https://dev.azure.com/x/17", "open", occurrence=3)
    store.put_task(reopened)
    assert store.get_task("boards", "k1") == reopened


def test_a_task_ref_stored_before_occurrences_existed_reads_as_occurrence_0() -> None:
    from shared.adapters.state import codec

    old = '{"destination":"boards","external_id":"17","finding_key":"k1","format":1,"state":"closed","url":"u"}'
    assert codec.task_from_json(old) == TaskRef("boards", "k1", "17", "u", "closed", occurrence=0)
    with pytest.raises(codec.CodecError, match=r"task\.occurrence"):
        codec.task_from_json(old.replace('"format":1', '"format":1,"occurrence":-1'))


# -- counts ------------------------------------------------------------------------------------------------


def test_counts_by_status(store: OutboxStore) -> None:
    store.add_deliveries([delivery(n) for n in range(5)])
    (d0, e0), (d1, e1), (d2, e2), *_ = store.due_deliveries(2000.0)
    store.update_delivery(replace(d0, status=DeliveryStatus.DONE), e0)
    store.update_delivery(replace(d1, status=DeliveryStatus.DONE), e1)
    store.update_delivery(replace(d2, status=DeliveryStatus.FAILED), e2)
    store.put_task(TaskRef("boards", "k0", "1"))  # tasks are not deliveries
    assert store.count_deliveries() == 5
    assert store.count_deliveries(DeliveryStatus.PENDING) == 2
    assert store.count_deliveries(DeliveryStatus.DONE) == 2
    assert store.count_deliveries(DeliveryStatus.FAILED) == 1


# -- concurrency -------------------------------------------------------------------------------------------


def test_racing_writers_store_each_delivery_once(store_factory: StoreFactory) -> None:
    workers = [store_factory() for _ in range(8)]
    batch = [delivery(n) for n in range(20)]
    added = in_threads(8, lambda i: workers[i].add_deliveries(batch))
    assert sum(added) == 20
    assert workers[0].count_deliveries() == 20
    assert keys(workers[0].due_deliveries(2000.0)) == [f"idem-{n}" for n in range(20)]


def test_racing_writers_on_one_store_object(store: OutboxStore) -> None:
    batch = [delivery(n) for n in range(20)]
    assert sum(in_threads(8, lambda _: store.add_deliveries(batch))) == 20
    assert store.count_deliveries(DeliveryStatus.PENDING) == 20


# -- codec ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(DeliveryStatus))
@pytest.mark.parametrize("last_status", [None, 429])
def test_delivery_codec_round_trips(status: DeliveryStatus, last_status: int | None) -> None:
    original = Delivery(
        destination="teams",
        idempotency_key="idem-Ω",
        transition={"key": "r|/subscriptions/x|", "nested": {"list": [1, 2.5, None, True]}, "text": "Zürich"},
        created_at=1_764_000_000.1234567,
        attempts=3,
        next_attempt_at=1_764_000_030.5,
        status=status,
        last_status=last_status,
        last_error="HTTP 429 (retry after 30 s)",
        digest=True,
    )
    text = codec.delivery_to_json(original)
    assert text.isascii()
    decoded = codec.delivery_from_json(text)
    assert decoded == original and decoded.transition == original.transition
    assert decoded.status is status and decoded.last_status == last_status
    assert codec.delivery_to_json(decoded) == text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("status", "sent", "delivery.status: 'sent' is not one of pending, done, failed"),
        ("attempts", True, "delivery.attempts: expected int, got bool"),
        ("last_status", "200", "delivery.last_status: expected int or NoneType, got str"),
        ("transition", [], "delivery.transition: expected dict, got list"),
        ("format", 99, "delivery.format: unsupported value 99"),
    ],
)
def test_corrupt_delivery_fails_loudly(field: str, value: Any, message: str) -> None:
    document = codec.delivery_to_dict(delivery(1))
    document[field] = value
    with pytest.raises(codec.CodecError) as raised:
        codec.delivery_from_json(codec.dumps(document))
    assert str(raised.value) == message


def test_task_codec_round_trips_and_validates() -> None:
    task = TaskRef("issues", "rule|/subscriptions/x|", "42", "https://github.com/o/r/issues/42", "closed")
    assert codec.task_from_json(codec.task_to_json(task)) == task
    with pytest.raises(codec.CodecError, match=r"task\.external_id: expected str, got int"):
        codec.task_from_json('{"destination":"issues","finding_key":"k","external_id":42,"url":"","state":"open"}')
