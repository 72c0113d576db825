"""The dispatcher under concurrency and time pressure, on both outbox stores (SQLite, and Table
storage on Azurite): several dispatchers over one store post each delivery exactly once, leases
are taken from the clock at the moment each is taken, a run keeps to its time budget and skips a
failing destination, and quiet-mode (digest) deliveries never hold up immediate alerts.

The clock is fake and shared by the dispatchers, the senders and the stores; the receivers are
real HTTP servers on loopback that advance it while they "work", the way a slow endpoint makes a
dispatch run take minutes of wall time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.notify import http
from shared.adapters.notify.destinations import parse_destinations
from shared.adapters.notify.teams import TeamsSender
from shared.adapters.notify.webhook import WebhookSender
from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.adapters.state.table_store import TableStateStore
from shared.core.notify.base import Delivery, DeliveryStatus, OutboxStore
from shared.service.dispatch import Dispatcher, OutboxSink
from tests.azurite import Azurite, unique_name
from tests.fakes import FakeServer, Received, Reply
from tests.fakes.transitions import make_transition

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
START = 1_790_000_000.0
FAST = http.RetrySettings(attempts=2, max_total_seconds=5, initial=0.01, max_wait=0.02)
REAL_TIMEOUT = 120.0  # wall seconds before a stuck scenario fails instead of hanging the suite

StoreFactory = Callable[[], OutboxStore]


class FakeClock:
    """Epoch seconds that move only when told to (thread-safe: dispatchers share it)."""

    def __init__(self, start: float = START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class SlowReceiver(FakeServer):
    """A webhook receiver that takes ``seconds`` of (fake) time per request, or fails with ``status``."""

    def __init__(self, clock: FakeClock, seconds: float, status: int = 200) -> None:
        super().__init__()
        self.clock, self.seconds, self.status = clock, seconds, status

    def handle(self, request: Received) -> Reply:
        self.clock.advance(self.seconds)
        return self.status, {}, b"{}"

    def ids(self) -> Counter[str]:
        return Counter(r.headers.get("webhook-id", "") for r in self.received)


@pytest.fixture(params=[pytest.param("table", marks=pytest.mark.azurite), "sqlite"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Each call is another worker (its own client or connection) on the same storage."""
    made: list[TableStateStore | SqliteStateStore] = []
    if request.param == "table":
        server: Azurite = request.getfixturevalue("azurite")
        prefix = unique_name("d")

        def make() -> OutboxStore:
            made.append(TableStateStore.from_connection_string(server.connection_string, prefix))
            return made[-1]
    else:

        def make() -> OutboxStore:
            made.append(SqliteStateStore(tmp_path / "state" / "dispatch.db"))
            return made[-1]

    yield make
    for store in made:
        store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def webhook_items(count: int, destination: str = "siem", at: float = START) -> list[Delivery]:
    items = []
    for n in range(count):
        transition = make_transition("sftp-enabled", key=f"sftp-enabled|account-{n:03d}|")
        items.append(
            Delivery(
                destination, f"{destination}-idem-{n:03d}", transition, created_at=at - 1000 + n, next_attempt_at=at
            )
        )
    return items


def webhook_dispatcher(store: OutboxStore, clock: FakeClock, *receivers: tuple[str, FakeServer]) -> Dispatcher:
    senders: dict[str, Any] = {
        name: WebhookSender(name, f"{server.url}/hook", SECRET, retry=FAST, clock=clock) for name, server in receivers
    }
    return Dispatcher(store, senders, {}, clock=clock)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + REAL_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def drain(dispatcher: Dispatcher, store: OutboxStore, clock: FakeClock, runs: int = 20) -> None:
    """The sweeps that follow: later runs deliver whatever earlier ones left."""
    for _ in range(runs):
        if store.count_deliveries(DeliveryStatus.PENDING) == 0:
            return
        clock.advance(3600.0)
        dispatcher.dispatch_due()


# -- defect 5: concurrent dispatchers ------------------------------------------------------------------


class PausingReceiver(SlowReceiver):
    """Holds its ``pause_at``-th request (in flight, its delivery leased) until told to answer."""

    def __init__(self, clock: FakeClock, seconds: float, pause_at: int) -> None:
        super().__init__(clock, seconds)
        self.pause_at = pause_at
        self.paused = threading.Event()
        self.resume = threading.Event()

    def handle(self, request: Received) -> Reply:
        answer = super().handle(request)
        if len(self.received) == self.pause_at:
            self.paused.set()
            self.resume.wait(REAL_TIMEOUT)
        return answer


def test_second_dispatcher_mid_run_does_not_resend(store_factory: StoreFactory, clock: FakeClock) -> None:
    """Issue 11, defect 5: a run that has been sending for two minutes no longer writes leases that
    are expired when written, so a second dispatcher starting then takes only what nobody holds.
    The first worker's 12th send (taken 110 s into its run, each send taking 10 s) is held in
    flight while the second worker dispatches. On 02faea9: 21 posts for 20 deliveries."""
    first_receiver = PausingReceiver(clock, seconds=10.0, pause_at=12)
    second_receiver = SlowReceiver(clock, seconds=10.0)
    with first_receiver, second_receiver:
        first_store, second_store = store_factory(), store_factory()
        items = webhook_items(20)
        first_store.add_deliveries(items)
        first = webhook_dispatcher(first_store, clock, ("siem", first_receiver))
        second = webhook_dispatcher(second_store, clock, ("siem", second_receiver))
        errors: list[BaseException] = []

        def run_first() -> None:
            try:
                first.dispatch_due()
            except BaseException as exc:  # surfaced below, not lost in the thread
                errors.append(exc)

        worker = threading.Thread(target=run_first)
        worker.start()
        wait_for(lambda: first_receiver.paused.is_set() or not worker.is_alive(), "the first run's 12th send")
        try:
            second.dispatch_due()  # another worker's evaluation ends and dispatches
        finally:
            first_receiver.resume.set()
        worker.join(REAL_TIMEOUT)
        assert not worker.is_alive() and errors == []
        drain(first, first_store, clock)
    posted = first_receiver.ids() + second_receiver.ids()
    assert sum(posted.values()) == 20, f"{sum(posted.values())} posts for 20 deliveries"
    assert posted == Counter({d.idempotency_key: 1 for d in items})
    assert first_store.count_deliveries(DeliveryStatus.DONE) == 20


def test_two_dispatchers_racing_post_each_delivery_exactly_once(store_factory: StoreFactory, clock: FakeClock) -> None:
    """Two workers dispatching in a loop over one store while sends take fake time: every delivery
    is posted once, and all end up done."""
    receiver = SlowReceiver(clock, seconds=7.0)
    with receiver:
        stores = [store_factory(), store_factory()]
        items = webhook_items(40)
        stores[0].add_deliveries(items)
        dispatchers = [webhook_dispatcher(s, clock, ("siem", receiver)) for s in stores]
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def work(i: int) -> None:
            try:
                barrier.wait()
                deadline = time.monotonic() + REAL_TIMEOUT
                while stores[i].count_deliveries(DeliveryStatus.PENDING) and time.monotonic() < deadline:
                    dispatchers[i].dispatch_due()
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(REAL_TIMEOUT + 10)
        assert errors == []
    posted = receiver.ids()
    assert sum(posted.values()) == 40, f"{sum(posted.values())} posts for 40 deliveries"
    assert posted == Counter({d.idempotency_key: 1 for d in items})
    assert stores[0].count_deliveries(DeliveryStatus.DONE) == 40


def test_leases_are_taken_from_the_clock_when_each_is_taken(store_factory: StoreFactory, clock: FakeClock) -> None:
    """Every lease outlives the send it covers: the first settle sees its lease still in force."""
    seen: list[tuple[float, float]] = []  # (time the send started, the lease the store held then)
    store = store_factory()
    items = webhook_items(6)
    store.add_deliveries(items)

    class Probe:
        name = "siem"

        def send(self, item: Delivery, tasks: Any) -> Any:
            stored = store.get_delivery(item.delivery_id)
            assert stored is not None
            seen.append((clock(), stored[0].next_attempt_at))
            clock.advance(45.0)  # a slow endpoint
            from shared.core.notify.base import Outcome

            return Outcome(ok=True, status=200)

    report = Dispatcher(store, {"siem": Probe()}, {}, clock=clock).dispatch_due()
    assert report.sent == len(seen) >= 2
    for started, lease in seen:
        assert lease >= started + 45.0 + 60.0, "a lease must outlast its send by a wide margin"


def test_a_run_keeps_to_its_time_budget_and_leaves_the_rest(store_factory: StoreFactory, clock: FakeClock) -> None:
    receiver = SlowReceiver(clock, seconds=10.0)
    with receiver:
        store = store_factory()
        items = webhook_items(30)
        store.add_deliveries(items)
        senders = {"siem": WebhookSender("siem", f"{receiver.url}/hook", SECRET, retry=FAST, clock=clock)}
        dispatcher = Dispatcher(store, senders, {}, clock=clock, budget_seconds=60.0)
        report = dispatcher.dispatch_due()
        # Sends start while less than 60 s have passed: at 0, 10, ... 50 s.
        assert report.sent == 6 and receiver.hits == 6
        assert report.deferred == 24
        left = [store.get_delivery(d.delivery_id) for d in items[6:]]
        assert all(x is not None and x[0].attempts == 0 and x[0].status is DeliveryStatus.PENDING for x in left)
        # Nothing the run left behind is leased: the very next run (another worker) takes it at once.
        assert len(store.due_deliveries(clock(), limit=100)) == 24
        while store.count_deliveries(DeliveryStatus.PENDING):
            dispatcher.dispatch_due()
    assert receiver.ids() == Counter({d.idempotency_key: 1 for d in items})


def test_default_budget_is_well_under_the_function_timeout() -> None:
    import json
    from pathlib import Path

    host = json.loads((Path(__file__).resolve().parents[1] / "host.json").read_text())
    hours, minutes, seconds = (int(x) for x in host["functionTimeout"].split(":"))
    timeout = hours * 3600 + minutes * 60 + seconds
    dispatcher = Dispatcher(SqliteStateStore(":memory:"), {}, {})
    # The budget plus the longest single send (the lease covers it) still ends well inside the timeout.
    assert dispatcher.budget <= timeout / 4
    assert dispatcher.budget + dispatcher.lease <= timeout * 0.75


def test_a_retryable_failure_skips_the_destination_for_the_rest_of_the_run(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    down = SlowReceiver(clock, seconds=1.0, status=503)
    up = SlowReceiver(clock, seconds=1.0)
    with down, up:
        store = store_factory()
        broken, healthy = webhook_items(5, "broken"), webhook_items(5, "healthy")
        store.add_deliveries([x for pair in zip(broken, healthy, strict=True) for x in pair])  # interleaved
        dispatcher = webhook_dispatcher(store, clock, ("broken", down), ("healthy", up))
        report = dispatcher.dispatch_due()
        assert report.sent == 5 and report.retried == 1
        assert "broken" in report.held_back
        assert down.hits == FAST.attempts  # one delivery tried (with its in-process retries), the rest not
        failed = store.get_delivery(broken[0].delivery_id)
        assert failed is not None and failed[0].attempts == 1 and failed[0].last_status == 503
        for item in broken[1:]:
            stored = store.get_delivery(item.delivery_id)
            assert stored is not None and stored[0].attempts == 0 and stored[0].status is DeliveryStatus.PENDING
            # Left for a later run, no sooner than the failed one: the destination keeps its order.
            assert stored[0].next_attempt_at >= failed[0].next_attempt_at
        down.status = 200
        drain(dispatcher, store, clock)
    assert down.ids() == Counter({d.idempotency_key: 1 for d in broken[1:]}) + Counter(
        {broken[0].idempotency_key: FAST.attempts + 1}
    )
    assert up.ids() == Counter({d.idempotency_key: 1 for d in healthy})


# -- defect 6: digests must not starve immediate alerts ------------------------------------------------


def quiet_teams() -> Any:
    (config,) = parse_destinations(
        [{"name": "secops", "type": "teams", "url_setting": "TEAMS_URL", "min_severity": "low", "digest_below": "high"}]
    )
    return config


def test_pending_digest_items_do_not_starve_an_immediate_alert(store_factory: StoreFactory, clock: FakeClock) -> None:
    """Issue 11, defect 6: 150 pending quiet-mode items, then one high-severity alert: the first
    evaluation dispatch sends the alert. On 02faea9: not sent (0 of 1) by three dispatches."""
    teams = SlowReceiver(clock, seconds=0.5)
    with teams:
        store = store_factory()
        sink = OutboxSink(store, [quiet_teams()], clock=clock)
        from shared.core.changes import Transition, TransitionKind
        from tests.fakes.transitions import PROVENANCE

        def transition(n: int, severity: str) -> Transition:
            return Transition(
                kind=TransitionKind.OPENED,
                rule_id="static-website" if severity != "high" else "sftp-enabled",
                resource_id=f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st{n}",
                perimeter_id=None,
                severity=severity,
                title="t",
                summary=f"finding {n}",
                key=f"k{n}",
                before={},
                after={"severity": severity},
                provenance=PROVENANCE,
            )

        for n in range(150):
            clock.advance(1.0)
            sink.emit([transition(n, "medium")])
        clock.advance(1.0)
        sink.emit([transition(999, "high")])
        assert store.count_deliveries(DeliveryStatus.PENDING) == 151
        digest_sends: list[int] = []

        def digest(items: Any) -> Any:
            digest_sends.append(len(items))
            return TeamsSender("secops", f"{teams.url}/hook", retry=FAST).send_digest(items)

        dispatcher = Dispatcher(
            store, {"secops": TeamsSender("secops", f"{teams.url}/hook", retry=FAST)}, {"secops": digest}, clock=clock
        )
        report = dispatcher.dispatch_due()  # after an evaluation: immediate deliveries only
        assert report.sent == 1 and teams.hits == 1, f"alert sent by the first dispatch: {report.sent} of 1"
        card = teams.received[0].json()["attachments"][0]["content"]
        assert "HIGH" in str(card["body"][0])
        assert store.count_deliveries(DeliveryStatus.PENDING) == 150
        # The sweep sends the quiet ones as digests, all of them.
        sweep = dispatcher.dispatch_due(include_digests=True)
        assert sweep.digests >= 1 and sum(digest_sends) == 150
    assert store.count_deliveries(DeliveryStatus.PENDING) == 0
    assert store.count_deliveries(DeliveryStatus.DONE) == 151


def test_store_answers_immediate_and_digest_deliveries_separately(store_factory: StoreFactory) -> None:
    store = store_factory()
    quiet = [Delivery("secops", f"q{n}", make_transition(key=f"q{n}"), created_at=n, digest=True) for n in range(5)]
    loud = [Delivery("secops", f"l{n}", make_transition(key=f"l{n}"), created_at=10 + n) for n in range(3)]
    store.add_deliveries([*quiet, *loud])
    assert [d.idempotency_key for d, _ in store.due_deliveries(100.0, limit=2, digest=False)] == ["l0", "l1"]
    assert [d.idempotency_key for d, _ in store.due_deliveries(100.0, limit=2, digest=True)] == ["q0", "q1"]
    assert len(store.due_deliveries(100.0, limit=100)) == 8  # both kinds, oldest first
    assert [d.idempotency_key for d, _ in store.due_deliveries(100.0, limit=3)] == ["q0", "q1", "q2"]


def test_sqlite_kind_sweep_walks_its_index_in_order(tmp_path: Path) -> None:
    import sqlite3

    SqliteStateStore(tmp_path / "plan.db").close()
    db = sqlite3.connect(tmp_path / "plan.db")
    plan = " ".join(
        str(row[-1])
        for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT data, etag FROM deliveries INDEXED BY deliveries_pending_by_kind"
            " WHERE status = 'pending' AND digest = 0 AND next_attempt_at <= 1 ORDER BY created_at, id LIMIT 5"
        )
    )
    db.close()
    assert "deliveries_pending_by_kind" in plan and "TEMP B-TREE" not in plan


# The deliveries table as 02faea9 created it (before the digest column), to prove the upgrade.
_OLD_DELIVERIES = """
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY, etag TEXT NOT NULL, status TEXT NOT NULL, next_attempt_at REAL NOT NULL,
    created_at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_pending ON deliveries (created_at, id, next_attempt_at) WHERE status = 'pending';
"""


def test_an_older_sqlite_file_is_upgraded_with_its_digest_items_sorted_out(tmp_path: Path) -> None:
    import sqlite3

    from shared.adapters.state import codec

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_OLD_DELIVERIES)
    quiet = Delivery("secops", "q1", make_transition(key="q1"), created_at=1.0, digest=True)
    loud = Delivery("secops", "l1", make_transition(key="l1"), created_at=2.0)
    for n, item in enumerate((quiet, loud)):
        db.execute(
            "INSERT INTO deliveries VALUES (?, ?, 'pending', 0, ?, ?)",
            (item.delivery_id, str(n + 1), item.created_at, codec.delivery_to_json(item)),
        )
    db.commit()
    db.close()
    stores = [SqliteStateStore(path), SqliteStateStore(path)]  # a second opener finds it upgraded
    later = Delivery("secops", "l2", make_transition(kind="resolved", key="l1"), created_at=3.0)
    try:
        for store in stores:
            assert [d.idempotency_key for d, _ in store.due_deliveries(10.0, digest=True)] == ["q1"]
            assert [d.idempotency_key for d, _ in store.due_deliveries(10.0, digest=False)] == ["l1"]
            # The old pending rows are listed under their finding: a later transition waits for them.
            older = store.older_pending(later)
            assert older is not None and older.idempotency_key == "l1"
    finally:
        for store in stores:
            store.close()


@pytest.mark.azurite
def test_table_index_rows_from_before_the_digest_property_are_still_found(azurite: Azurite) -> None:
    from azure.data.tables import TableServiceClient, UpdateMode

    store = TableStateStore.from_connection_string(azurite.connection_string, unique_name("d"))
    quiet = Delivery("secops", "q1", make_transition(key="q1"), created_at=1.0, digest=True)
    loud = Delivery("secops", "l1", make_transition(key="l1"), created_at=2.0)
    store.add_deliveries([quiet, loud])
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        table = service.get_table_client(store._outbox_table)
        for item in (quiet, loud):  # rewrite the index rows the way 02faea9 wrote them
            row = table.get_entity("delivery", "~due|" + item.delivery_id)
            del row["Digest"]
            table.upsert_entity(row, mode=UpdateMode.REPLACE)
            assert "Digest" not in table.get_entity("delivery", "~due|" + item.delivery_id)
    assert [d.idempotency_key for d, _ in store.due_deliveries(10.0, digest=True)] == ["q1"]
    assert [d.idempotency_key for d, _ in store.due_deliveries(10.0, digest=False)] == ["l1"]
    store.close()


@pytest.mark.parametrize(
    ("value", "expected"), [("", 120.0), ("60", 60.0), ("240", 240.0), ("5", None), ("600", None), ("soon", None)]
)
def test_dispatch_budget_setting(value: str, expected: float | None) -> None:
    from shared.entrypoints.settings import SettingsError, load_settings

    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "NSP_DRIFT_DISPATCH_BUDGET_SECONDS": value}
    if expected is None:
        with pytest.raises(SettingsError, match="NSP_DRIFT_DISPATCH_BUDGET_SECONDS"):
            load_settings(env)
    else:
        assert load_settings(env).dispatch_budget_seconds == expected


# -- order per finding ------------------------------------------------------------------------------------


class FlakyReceiver(SlowReceiver):
    """Fails its first ``failures`` requests with 503, then accepts; keeps the order it accepted in."""

    def __init__(self, clock: FakeClock, failures: int) -> None:
        super().__init__(clock, seconds=0.0)
        self.failures = failures
        self.accepted: list[str] = []

    def handle(self, request: Received) -> Reply:
        if self.failures > 0:
            self.failures -= 1
            return 503, {}, b"{}"
        self.accepted.append(str(request.json()["data"]["transition"]))
        return 200, {}, b"{}"


def test_a_later_transition_of_a_finding_waits_for_an_earlier_retried_one(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    """Issue 11 (order per finding): a destination's "opened" fails and is retried later; the same
    finding's "resolved", recorded meanwhile, must not overtake it. Before the fix the receiver
    accepted ["resolved", "opened"] (the next run sent the resolved while the opened waited out
    its back-off), i.e. it ended up believing the finding was open."""
    receiver = FlakyReceiver(clock, failures=FAST.attempts)  # the opened's first attempt fails (with its retries)
    key = "sftp-enabled|account-order|"
    opened = make_transition("sftp-enabled", "opened", key=key, occurrence=1)
    resolved = make_transition("sftp-enabled", "resolved", key=key, occurrence=1)
    other = make_transition("sftp-enabled", "opened", key="sftp-enabled|account-other|", occurrence=1)
    with receiver:
        store = store_factory()
        dispatcher = webhook_dispatcher(store, clock, ("siem", receiver))
        store.add_deliveries([Delivery("siem", "order-opened", opened, created_at=clock(), next_attempt_at=clock())])
        report = dispatcher.dispatch_due()
        assert report.retried == 1 and receiver.accepted == []
        clock.advance(1.0)  # the finding resolves; another one opens; the opened still backs off
        store.add_deliveries(
            [
                Delivery("siem", "order-resolved", resolved, created_at=clock(), next_attempt_at=clock()),
                Delivery("siem", "order-other", other, created_at=clock(), next_attempt_at=clock()),
            ]
        )
        clock.advance(1.0)
        dispatcher.dispatch_due()
        assert receiver.accepted == ["opened"]  # another finding's alert is not held up
        held = store.get_delivery(Delivery("siem", "order-resolved", resolved).delivery_id)
        assert held is not None and held[0].status is DeliveryStatus.PENDING and held[0].attempts == 0
        drain(dispatcher, store, clock)
    assert receiver.accepted == ["opened", "opened", "resolved"]


def test_an_evaluations_run_sends_its_own_deliveries_and_leaves_others_fresh_ones(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    """Concurrent evaluations each used to read, and try to lease, every other one's fresh
    deliveries (about 20 Table calls per evaluation in a storm). An evaluation's run now sends the
    deliveries it recorded (by id) and, of the backlog, only those recorded FRESH_SECONDS ago or
    more (left by an invocation that died, or waiting for a retry); the sweep's run takes all."""
    from shared.service.dispatch import FRESH_SECONDS

    receiver = SlowReceiver(clock, seconds=0.0)
    with receiver:
        store = store_factory()
        now = clock()
        own, others, stale = (
            Delivery(
                "siem",
                key,
                make_transition("sftp-enabled", key=f"sftp-enabled|{key}|"),
                created_at=at,
                next_attempt_at=at,
            )
            for key, at in (("own", now), ("others", now - 1.0), ("stale", now - FRESH_SECONDS - 1.0))
        )
        store.add_deliveries([own, others, stale])
        dispatcher = webhook_dispatcher(store, clock, ("siem", receiver))

        report = dispatcher.dispatch_due(recorded=[own.delivery_id])
        assert report.sent == 2 and set(receiver.ids()) == {"own", "stale"}
        assert report.skipped == 0  # nothing leased by someone else was even looked at

        report = dispatcher.dispatch_due(recorded=[own.delivery_id])  # again: nothing left for it
        assert report.sent == 0
        report = dispatcher.dispatch_due()  # the sweep's run
        assert report.sent == 1 and receiver.ids() == Counter({"own": 1, "stale": 1, "others": 1})
