"""End-to-end scenarios through the real pipeline: events -> windows -> evaluations -> transitions.

The state store is SQLite and, for the same scenarios, Azure Table storage on a real Azurite.
ARM is the offline estate under the real SDK clients.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters import runtime
from shared.adapters.estate import Estate
from shared.core.config import RulesConfig
from shared.core.state.base import StateStore
from shared.core.targeting import Scope
from shared.entrypoints.replay import MemoryQueue, record_baseline_estate, replay
from shared.service.pipeline import CollectingSink, Pipeline, Readers, SweepReport, WindowStatus
from shared.wiring import EstateClients, readers_for
from tests.azurite import Azurite, unique_name

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"

EXPECTED_SAMPLE = {
    ("changed", "perimeter-access-mode-changed", "stcontosoaudit01"),
    ("resolved", "association-not-enforced", "stcontosoaudit01"),
    ("opened", "sftp-enabled", "stcontosoclean01"),
    ("changed", "perimeter-access-mode-changed", "stcontosoclean02"),
    ("opened", "association-not-enforced", "stcontosoclean02"),
    # The account already had a too-broad rule (inVpnRule): the new one is more evidence, and worse.
    ("changed", "inbound-rule-too-broad", "stcontosolegacy01"),
    ("resolved", "object-replication", "stcontosorepl01"),
    ("resolved", "unmanaged-disk", "stcontosovhd01"),
    ("changed", "perimeter-access-rules-changed", "nsp-contoso-data"),
}


def triples(transitions: Any) -> list[tuple[str, str, str]]:
    return sorted((t.kind.value, t.rule_id, t.resource_id.rsplit("/", 1)[-1]) for t in transitions)


@pytest.fixture(params=["sqlite", pytest.param("table", marks=pytest.mark.azurite)])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], StateStore]]:
    stores: list[StateStore] = []

    def make() -> StateStore:
        if request.param == "sqlite":
            from shared.adapters.state.sqlite_store import SqliteStateStore

            store: StateStore = SqliteStateStore(str(tmp_path / "state.sqlite"))
        else:
            from shared.adapters.state.table_store import TableStateStore

            azurite: Azurite = request.getfixturevalue("azurite")
            store = TableStateStore.from_connection_string(azurite.connection_string, unique_name("t"))
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


class Driver:
    """The steps over one store, queue and outbox, reading an estate (a fresh set of readers
    per call, as the function app builds per invocation)."""

    def __init__(self, clients: EstateClients, store: StateStore, queue: MemoryQueue, sink: Any, window: float) -> None:
        self.clients = clients
        self.pipeline = Pipeline(
            store=store,
            outbox=sink,
            enqueue=queue.send,
            config=RulesConfig(),
            scope=Scope((SUB,)),
            window_seconds=window,
        )

    def readers(self) -> Readers:
        return readers_for(self.clients)

    def intake(self, events: Any) -> Any:
        return self.pipeline.intake(events)

    def sweep(self, subscriptions: list[str], use_graph: bool = False) -> SweepReport:
        return runtime.run(self.pipeline.sweep(subscriptions, self.readers(), use_graph=use_graph))


def pipeline(
    estate: Estate, store: StateStore, queue: MemoryQueue, sink: CollectingSink, window: float = 30.0
) -> Driver:
    return Driver(EstateClients(estate), store, queue, sink, window)


def run_windows(p: Driver, queue: MemoryQueue) -> int:
    """Evaluate every queued window once; the number of windows evaluated."""
    targets = queue.drain()

    async def go() -> int:
        done = 0
        for target in targets:
            result = await p.pipeline.evaluate_window(target, p.readers())
            assert result.status is not WindowStatus.RETRY, result.error
            done += result.status is WindowStatus.DONE
        return done

    return runtime.run(go())


def test_sample_replay_exact_transitions_and_redelivery_changes_nothing(
    store_factory: Callable[[], StateStore],
) -> None:
    store = store_factory()
    record_baseline_estate(Estate.load(SAMPLES / "estate.json"), store, RulesConfig())
    events = json.loads((SAMPLES / "events.json").read_text())
    queue, sink = MemoryQueue(), CollectingSink()
    p = pipeline(Estate.load(SAMPLES / "estate-changed.json"), store, queue, sink)

    report = p.intake(events)
    assert report.duplicates == 1 and sum(report.dropped.values()) == 2
    assert run_windows(p, queue) == 4  # account burst, OR deletes, perimeter burst, VM delete
    assert set(triples(sink.transitions)) == EXPECTED_SAMPLE
    # One transition per finding: the VM's three VHDs, the two replication policies are one each.
    assert len(sink.transitions) == len(EXPECTED_SAMPLE) == 9
    assert len(triples(sink.transitions)) == len(set(map(lambda t: t.key + t.kind.value, sink.transitions)))
    by_rule = {t.rule_id: t for t in sink.transitions}
    assert by_rule["sftp-enabled"].provenance.changed_by == "alice@contoso.com from 203.0.113.10"
    # The burst, de-duplicated: its second event (alice again, the same operation) was absorbed
    # into the open window without a write, so the alert lists the three that named something
    # (two more are absorbed in other windows).
    assert report.absorbed == 3
    assert len(by_rule["sftp-enabled"].provenance.event_ids) == 3
    assert by_rule["unmanaged-disk"].provenance.changed_by.startswith("dave@contoso.com")
    assert "broad" in by_rule["perimeter-access-rules-changed"].flags
    # Only the account associated through the changed profile (profile-legacy) is affected.
    assert [a.rsplit("/", 1)[-1] for a in by_rule["perimeter-access-rules-changed"].accounts] == ["stcontosolegacy01"]
    disks = by_rule["unmanaged-disk"]
    assert [i["disk"] for i in disks.evidence["items"]] == ["dataDisk0", "dataDisk1", "myVMosdisk"]

    # Event Grid delivers again: every event a second time, nothing new. The absorbed events were
    # never recorded: with their windows gone, each of the three windows that absorbed one is
    # opened again (the sample's repeated event is then absorbed into its own), which costs one quiet
    # re-evaluation each; the recorded events are duplicates.
    sink.transitions.clear()
    again = p.intake(events)
    assert again.windows_opened == 3 and again.absorbed == 1 and again.duplicates == 7
    assert run_windows(p, queue) == 3
    assert sink.transitions == []


def test_replay_command_api_matches_and_is_repeatable(tmp_path: Path) -> None:
    state = str(tmp_path / "s.sqlite")
    first = replay(
        SAMPLES / "events.json",
        SAMPLES / "estate-changed.json",
        state_path=state,
        baseline_path=SAMPLES / "estate.json",
    )
    assert set(triples(first.transitions)) == EXPECTED_SAMPLE
    second = replay(SAMPLES / "events.json", SAMPLES / "estate-changed.json", state_path=state)
    assert second.transitions == []


def storm_estates(accounts: int) -> tuple[Estate, Estate, list[str]]:
    """``accounts`` copies of the clean sample account (in the perimeter), before and after SFTP."""
    base = json.loads((SAMPLES / "estate.json").read_text())
    template_id = next(k for k in base if k.endswith("/storageAccounts/stcontosoclean01"))
    config_id = next(k for k in base if "stcontosoclean01/networkSecurityPerimeterConfigurations/" in k)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    ids = []
    for i in range(accounts):
        name = f"ststorm{i:03d}"
        for source in (template_id, config_id):
            body = json.loads(json.dumps(base[source]).replace("stcontosoclean01", name))
            before[body["id"]] = body
            changed = copy.deepcopy(body)
            if "/networkSecurityPerimeterConfigurations/" not in body["id"]:
                changed["properties"]["isSftpEnabled"] = True
                ids.append(body["id"])
            after[changed["id"]] = changed
    return Estate(before), Estate(after), ids


def storm_events(ids: list[str], total: int) -> list[dict[str, Any]]:
    template = json.loads((SAMPLES / "events.json").read_text())[0]
    events = []
    for n in range(total):
        account = ids[n % len(ids)]
        event = copy.deepcopy(template)
        child = ["", "/blobServices/default", "/fileServices/default", "/managementPolicies/default"][n % 4]
        event["id"] = f"storm-{n:05d}"
        event["subject"] = event["data"]["resourceUri"] = account + child
        events.append(event)
    return events


def test_storm_of_1000_events_over_50_accounts_coalesces(store_factory: Callable[[], StateStore]) -> None:
    store = store_factory()
    before, after, ids = storm_estates(50)
    record_baseline_estate(before, store, RulesConfig())
    events = storm_events(ids, 1000)
    queue, sink = MemoryQueue(), CollectingSink()
    p = pipeline(after, store, queue, sink)
    report = p.intake(events)
    assert report.accepted == 1000 and report.windows_opened == 50
    # One actor and operation per account: every event after the window's first was absorbed.
    assert report.absorbed == 950
    evaluations = run_windows(p, queue)
    assert evaluations <= 50
    keys = [(t.key, t.kind.value) for t in sink.transitions]
    assert len(keys) == len(set(keys)) == 50
    assert {t.rule_id for t in sink.transitions} == {"sftp-enabled"}
    assert all(len(t.provenance.event_ids) == 1 for t in sink.transitions)
    assert all(t.provenance.changed_by == "alice@contoso.com from 203.0.113.10" for t in sink.transitions)

    # Re-deliver the whole storm: nothing is emitted. The windows' first events were recorded
    # (duplicates); the first absorbed event per account finds no window and opens one (one
    # quiet re-evaluation per account), the rest are absorbed into it.
    sink.transitions.clear()
    again = p.intake(events)
    assert again.duplicates == 50 and again.windows_opened == 50 and again.absorbed == 900
    assert run_windows(p, queue) == 50 and sink.transitions == []


def test_sweep_reconciles_what_events_missed(store_factory: Callable[[], StateStore]) -> None:
    store = store_factory()
    record_baseline_estate(Estate.load(SAMPLES / "estate.json"), store, RulesConfig())
    queue, sink = MemoryQueue(), CollectingSink()
    p = pipeline(Estate.load(SAMPLES / "estate-changed.json"), store, queue, sink)
    report = p.sweep([SUB])
    assert report.failed == [] and report.accounts == 15
    found = set(triples(sink.transitions))
    # Everything the events would have reported, now attributed to the sweep.
    assert found == EXPECTED_SAMPLE
    assert {t.provenance.changed_by for t in sink.transitions} == {"reconciliation sweep"}
    sink.transitions.clear()
    p.sweep([SUB])
    assert sink.transitions == []


def test_cli_scan_records_baseline_that_replay_diffs_against(tmp_path: Path) -> None:
    import io

    from shared.entrypoints.cli import main

    state = str(tmp_path / "baseline.sqlite")
    out, err = io.StringIO(), io.StringIO()
    assert main(["scan", "--estate", "sample", "--state", state, "--format", "json"], out, err) == 1
    out = io.StringIO()
    code = main(["replay", "sample", "--estate", "sample-changed", "--state", state, "--format", "jsonl"], out, err)
    assert code == 0, err.getvalue()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {(d["transition"], d["rule"], d["resource"].rsplit("/", 1)[-1]) for d in lines} == EXPECTED_SAMPLE
    required = {"transition", "rule", "resource", "perimeter", "severity", "summary", "changed_by", "event_ids"}
    for line in lines:
        assert required <= set(line)
        assert line["event_ids"], line


def test_graph_sweep_evaluates_only_accounts_whose_summary_changed(store_factory: Callable[[], StateStore]) -> None:
    store = store_factory()
    record_baseline_estate(Estate.load(SAMPLES / "estate.json"), store, RulesConfig())
    queue, sink = MemoryQueue(), CollectingSink()
    clients = EstateClients(Estate.load(SAMPLES / "estate-changed.json"))
    p = Driver(clients, store, queue, sink, 30.0)
    report = p.sweep([SUB], use_graph=True)
    # stcontosoclean01's summary changed (SFTP); stcontosovhd01's summary did not, but the VM that
    # kept VHDs in it no longer does (the vhd-vms query shows it): both are re-read (issue 12).
    assert report.listed == 15 and report.unchanged == 13 and report.accounts == 2
    assert set(triples(sink.transitions)) == {
        ("opened", "sftp-enabled", "stcontosoclean01"),
        ("resolved", "unmanaged-disk", "stcontosovhd01"),
    }
    graph_posts = [path for method, path in clients.log.requests if method == "POST"]
    assert len(graph_posts) == 3  # the accounts, vhd-vms and blob-backups queries, one page each
    # Unchanged summaries after that: the next graph sweep evaluates nothing.
    assert p.sweep([SUB], use_graph=True).accounts == 0
