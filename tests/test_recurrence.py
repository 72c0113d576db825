"""A finding that comes back is a new occurrence: it reaches every destination again.

Issue 11, defect 1. The real pipeline (intake -> window -> evaluation -> outbox) over the offline
estate, the real dispatcher and senders, and loopback servers standing in for a signed webhook,
Teams, Azure DevOps and GitHub. Each step changes the estate, sends the event Azure would send,
closes the window and dispatches; the receivers count what reached them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import runtime
from shared.adapters.estate import Estate
from shared.adapters.notify import http
from shared.adapters.notify.destinations import DestinationConfig, build_senders, parse_destinations
from shared.core.changes import Transition, TransitionKind
from shared.core.config import RulesConfig
from shared.core.state.base import StateStore
from shared.core.targeting import Scope
from shared.entrypoints.replay import MemoryQueue, record_baseline_estate
from shared.service.dispatch import Dispatcher, OutboxSink
from shared.service.pipeline import CollectingSink, Pipeline
from shared.wiring import EstateClients, readers_for
from tests.azurite import Azurite, unique_name
from tests.estate_builder import member, merge, perimeter
from tests.fakes import FakeAzureDevOps, FakeGitHub, FakeServer, running
from tests.sample_estate import EG, SUB, account_id, sample_event

ADO_TOKEN = "adopat-recurrence-0123456789abcdefghijklmnop"
GH_TOKEN = "ghp_recurrence0123456789abcdefghijklmnopq"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = http.RetrySettings(attempts=3, max_total_seconds=5, initial=0.01, max_wait=0.05)
NAME = "stsftprecur01"
ACCOUNT = account_id(NAME)


@pytest.fixture(params=["sqlite", pytest.param("table", marks=pytest.mark.azurite)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        from shared.adapters.state.sqlite_store import SqliteStateStore

        opened: StateStore = SqliteStateStore(str(tmp_path / "state.sqlite"))
    else:
        from shared.adapters.state.table_store import TableStateStore

        azurite: Azurite = request.getfixturevalue("azurite")
        opened = TableStateStore.from_connection_string(azurite.connection_string, unique_name("rec"))
    yield opened
    opened.close()


@pytest.fixture
def servers() -> Iterator[dict[str, FakeServer]]:
    fakes = {"hook": FakeServer(), "teams": FakeServer(), "ado": FakeAzureDevOps(ADO_TOKEN), "gh": FakeGitHub(GH_TOKEN)}
    with running(*fakes.values()):
        yield fakes


def destinations(fakes: Mapping[str, FakeServer]) -> tuple[tuple[DestinationConfig, ...], dict[str, str]]:
    env = {
        "HOOK_URL": f"{fakes['hook'].url}/hook",
        "HOOK_SECRET": HOOK_SECRET,
        "TEAMS_URL": f"{fakes['teams'].url}/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sig=s",
        "ADO_TOKEN": ADO_TOKEN,
        "GH_TOKEN": GH_TOKEN,
    }
    configs = parse_destinations(
        [
            {"name": "siem", "type": "webhook", "url_setting": "HOOK_URL", "secret_setting": "HOOK_SECRET"},
            {"name": "secops", "type": "teams", "url_setting": "TEAMS_URL"},
            {
                "name": "boards",
                "type": "azure-devops",
                "organization": "contoso",
                "project": "Platform",
                "token_setting": "ADO_TOKEN",
                "base_url": fakes["ado"].url,
            },
            {
                "name": "issues",
                "type": "github",
                "repository": "contoso/platform-security",
                "token_setting": "GH_TOKEN",
                "api_url": fakes["gh"].url,
            },
        ]
    )
    return configs, env


class _Tee:
    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def emit(self, transitions: Any) -> None:
        for sink in self.sinks:
            sink.emit(transitions)


def make_pipeline(store: StateStore, queue: MemoryQueue, sink: Any) -> Pipeline:
    return Pipeline(
        store=store, outbox=sink, enqueue=queue.send, config=RulesConfig(), scope=Scope((SUB,)), window_seconds=0.0
    )


class Scenario:
    """One store and one set of destinations across a sequence of estates and events."""

    def __init__(self, store: StateStore, fakes: Mapping[str, FakeServer], baseline: Mapping[str, Any]) -> None:
        self.store = store
        self.configs, env = destinations(fakes)
        senders, digests = build_senders(self.configs, env, retry=FAST)
        self.dispatcher = Dispatcher(store, senders, digests)  # type: ignore[arg-type]
        self.collected = CollectingSink()
        self.steps = 0
        record_baseline_estate(Estate(baseline), store, RulesConfig())

    def step(self, resources: Mapping[str, Any], event: dict[str, Any]) -> list[Transition]:
        queue = MemoryQueue()
        before = len(self.collected.transitions)
        sink = _Tee(self.collected, OutboxSink(self.store, self.configs))  # type: ignore[arg-type]
        pipeline = make_pipeline(self.store, queue, sink)
        report = pipeline.intake([event])
        assert report.accepted == 1, report
        readers = readers_for(EstateClients(Estate(resources)))

        async def close_windows() -> None:
            for target in queue.drain():
                await pipeline.evaluate_window(target, readers)

        runtime.run(close_windows())
        self.dispatcher.dispatch_due(include_digests=True)
        return self.collected.transitions[before:]


def event(kind: str, number: int) -> dict[str, Any]:
    operation = f"Microsoft.Storage/storageAccounts/{kind}"
    template = EG + ("resource_delete_success.json" if kind == "delete" else "resource_write_success.json")
    when = f"2026-11-24T1{number}:00:00Z"
    return sample_event(template, f"recur-{kind}-{number:04d}", ACCOUNT, operation, "alice", when, f"corr-{number}")


def sftp_kinds(transitions: list[Transition]) -> list[str]:
    return [t.kind.value for t in transitions if t.rule_id == "sftp-enabled"]


def sftp_findings(transitions: list[Transition]) -> list[tuple[str, int]]:
    return [(t.kind.value, t.occurrence) for t in transitions if t.rule_id == "sftp-enabled"]


def webhook_events(fakes: Mapping[str, FakeServer]) -> list[dict[str, Any]]:
    return [r.json() for r in fakes["hook"].received]


def delivered(fakes: Mapping[str, FakeServer]) -> dict[str, int]:
    """Deliveries that reached each receiver (tasks: the calls that changed or commented a task)."""
    ado: Any = fakes["ado"]
    gh: Any = fakes["gh"]
    return {
        "siem": len(fakes["hook"].received),
        "secops": len(fakes["teams"].received),
        "boards": sum(len(i["comments"]) for i in ado.items.values()) + len(ado.items),
        "issues": sum(len(i["comments"]) for i in gh.issues.values()) + len(gh.issues),
    }


OFF = merge(perimeter(NAME), member(NAME))
ON = merge(perimeter(NAME), member(NAME, isSftpEnabled=True))
GONE = perimeter()


def test_sftp_on_off_on_reaches_every_destination_each_time(store: StateStore, servers: dict[str, FakeServer]) -> None:
    scenario = Scenario(store, servers, OFF)
    steps = [scenario.step(ON, event("write", 1)), scenario.step(OFF, event("write", 2))]
    steps.append(scenario.step(ON, event("write", 3)))
    assert [sftp_kinds(s) for s in steps] == [["opened"], ["resolved"], ["opened"]]  # decided right, also before
    # Delivered: before the fix 2 per destination (the second opening collided with the first's key).
    assert delivered(servers) == {"siem": 3, "secops": 3, "boards": 3, "issues": 3}
    assert [sftp_findings(s) for s in steps] == [[("opened", 1)], [("resolved", 1)], [("opened", 2)]]
    hooks = webhook_events(servers)
    assert [(e["data"]["transition"], e["data"]["occurrence"]) for e in hooks] == [
        ("opened", 1),
        ("resolved", 1),
        ("opened", 2),
    ]
    assert len({r.headers["webhook-id"] for r in servers["hook"].received}) == 3
    assert len(servers["teams"].received) == 3
    # One task per finding, closed on resolution and reopened on recurrence (README, "Alerts and tasks").
    ado: Any = servers["ado"]
    gh: Any = servers["gh"]
    assert list(ado.items) == [1] and ado.items[1]["fields"]["System.State"] == "To Do"
    assert len(ado.items[1]["comments"]) == 2  # resolved, reopened
    assert "Reopened" in ado.items[1]["comments"][-1] and "occurrence 2" in ado.items[1]["comments"][-1]
    assert list(gh.issues) == [1] and gh.issues[1]["state"] == "open"
    assert gh.issues[1]["state_reason"] == "reopened" and len(gh.issues[1]["comments"]) == 2
    assert store.count_deliveries() == 12  # type: ignore[attr-defined]  # 3 transitions x 4 destinations

    # Resolved again: the reopened task closes again; a full re-delivery of every event sends nothing.
    assert sftp_findings(scenario.step(OFF, event("write", 4))) == [("resolved", 2)]
    assert ado.items[1]["fields"]["System.State"] == "Done" and gh.issues[1]["state"] == "closed"
    before = delivered(servers)
    for number, kind in ((1, "write"), (2, "write"), (3, "write"), (4, "write")):
        queue = MemoryQueue()
        sink = CollectingSink()
        pipeline = make_pipeline(store, queue, sink)
        assert pipeline.intake([event(kind, number)]).duplicates == 1
    scenario.dispatcher.dispatch_due(include_digests=True)
    assert delivered(servers) == before


def test_a_deleted_and_recreated_account_is_a_new_occurrence(store: StateStore, servers: dict[str, FakeServer]) -> None:
    scenario = Scenario(store, servers, OFF)
    opened = scenario.step(ON, event("write", 1))
    deleted = scenario.step(GONE, event("delete", 2))
    gone_ids = store.all_account_ids()  # the deleted account is no longer listed for sweeps and lookups
    recreated = scenario.step(ON, event("write", 3))
    assert [sftp_kinds(s) for s in (opened, deleted, recreated)] == [["opened"], ["resolved"], ["opened"]]
    # Delivered: before the fix 2 per destination (the recreated account's opening collided).
    assert delivered(servers) == {"siem": 3, "secops": 3, "boards": 3, "issues": 3}
    assert sftp_findings(deleted) == [("resolved", 1)] and sftp_findings(recreated) == [("opened", 2)]
    assert "account deleted" in deleted[0].summary and gone_ids == []
    assert [t.kind for t in recreated] == [TransitionKind.OPENED]  # its association is a baseline, not drift

    hooks = webhook_events(servers)
    # Before the fix: 2 (the recreated account's opening collided with the first account's).
    assert [(e["data"]["transition"], e["data"]["occurrence"]) for e in hooks] == [
        ("opened", 1),
        ("resolved", 1),
        ("opened", 2),
    ]
    assert len(servers["teams"].received) == 3
    gh: Any = servers["gh"]
    assert list(gh.issues) == [1] and gh.issues[1]["state"] == "open" and gh.issues[1]["state_reason"] == "reopened"
    assert store.all_account_ids() == [ACCOUNT]


def test_a_crash_before_the_state_write_re_detects_the_same_occurrence(
    store: StateStore, servers: dict[str, FakeServer]
) -> None:
    """The key is deterministic per occurrence: a crash before the state write records nothing
    (transitions reach the outbox only after the write that makes them true: shared/service/pipeline.py,
    "Ordering"), and the re-detection records the second occurrence once, with its own key."""
    scenario = Scenario(store, servers, OFF)
    scenario.step(ON, event("write", 1))
    scenario.step(OFF, event("write", 2))

    class Crash(Exception):
        pass

    real_put = store.put_account
    crashes: list[str] = []

    def crash_once(state: Any, etag: Any) -> str:
        if not crashes:
            crashes.append(state.account_id)
            raise Crash("killed before the state write")
        return real_put(state, etag)

    store.put_account = crash_once  # type: ignore[method-assign]
    try:
        assert scenario.step(ON, event("write", 3)) == []  # nothing emitted: the window backs off
    finally:
        store.put_account = real_put  # type: ignore[method-assign]
    assert crashes == [ACCOUNT]
    assert [m.target.resource_id for m in store.failing_pending()] == [ACCOUNT]
    # The reconciliation sweep re-detects the opening from the unchanged stored state.
    sink = _Tee(scenario.collected, OutboxSink(store, scenario.configs))  # type: ignore[arg-type]
    pipeline = make_pipeline(store, MemoryQueue(), sink)
    report = runtime.run(pipeline.sweep([SUB], readers_for(EstateClients(Estate(ON)))))
    assert report.failed == []
    scenario.dispatcher.dispatch_due(include_digests=True)
    keys = [(t.kind.value, t.occurrence, t.idempotency_key) for t in scenario.collected.transitions]
    assert [k[:2] for k in keys] == [("opened", 1), ("resolved", 1), ("opened", 2)]
    assert keys[0][2] != keys[2][2]  # a new key per occurrence
    assert [(e["data"]["transition"], e["data"]["occurrence"]) for e in webhook_events(servers)] == [
        ("opened", 1),
        ("resolved", 1),
        ("opened", 2),
    ]
    assert delivered(servers) == {"siem": 3, "secops": 3, "boards": 3, "issues": 3}
