"""A storage account event leaves the rules whose evidence lives on other resources (unmanaged-disk:
the subscription's VMs; azure-backup: the backup instances) to their own events and the sweeps
(shared.service.pipeline.LINKED_READS), and stays sound where it cannot:

- when the stored state stands on a read of them, the event reads neither the VM list nor the
  backup instances and carries their findings forward; the VM's own event then judges its rule;
- a first evaluation, and an account whose last read found it outside every perimeter, read them;
- a deleted account resolves every finding, theirs too; a recreated one is read in full.

Real pipeline, SQLite store, the offline estate under the real SDK clients (its request log).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from shared.adapters import runtime
from shared.adapters.estate import Estate
from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.core.changes import Transition
from shared.core.config import RulesConfig
from shared.core.targeting import Scope
from shared.entrypoints.replay import MemoryQueue, record_baseline_estate
from shared.service.pipeline import CollectingSink, Pipeline, WindowStatus
from shared.wiring import EstateClients, readers_for
from tests import estate_builder as eb
from tests.sample_estate import SUB, account_id

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"
NAME = "stlinked01"
VM_LIST = f"GET /subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"


def _events() -> list[dict[str, Any]]:
    return list(json.loads((SAMPLES / "events.json").read_text()))


def account_event(n: int, delete: bool = False) -> dict[str, Any]:
    """The sample's storage account write (alice, portal), on NAME; or its delete."""
    event = copy.deepcopy(_events()[0])
    event["id"] = f"linked-{n}"
    event["subject"] = event["data"]["resourceUri"] = event["data"]["authorization"]["scope"] = account_id(NAME)
    if delete:
        event["eventType"] = "Microsoft.Resources.ResourceDeleteSuccess"
        event["data"]["operationName"] = event["data"]["authorization"]["action"] = (
            "Microsoft.Storage/storageAccounts/delete"
        )
    return event


def vm_delete_event() -> dict[str, Any]:
    """The sample's VM delete (dave), of the VM with VHDs in NAME."""
    event = next(e for e in _events() if str(e["data"].get("operationName", "")).endswith("virtualMachines/delete"))
    return copy.deepcopy(event)


def linked(account: dict[str, Any] | None = None, vm: bool = True, backup: bool = True) -> dict[str, Any]:
    """NAME in the perimeter (or ``account`` instead), a VM with VHDs in it, a vaulted backup."""
    parts = [account if account is not None else eb.member(NAME), eb.perimeter(NAME)]
    if vm:
        parts.append(eb.legacy_vm(NAME))
    if backup:
        parts += [eb.backup_instance(NAME, "pol-vault", "bi-1"), eb.backup_policy("pol-vault", "VaultStore")]
    return eb.merge(*parts)


class World:
    """One store and queue; each ``run`` serves the given estate to an event's window."""

    def __init__(self, tmp_path: Path, baseline: dict[str, Any] | None) -> None:
        self.store = SqliteStateStore(str(tmp_path / "state.sqlite"))
        if baseline is not None:
            record_baseline_estate(Estate(baseline), self.store, RulesConfig())
        self.queue = MemoryQueue()
        self.sink = CollectingSink()

    def run(self, estate: dict[str, Any], *events: dict[str, Any]) -> tuple[list[Transition], list[str]]:
        """The events' windows evaluated against ``estate``: (transitions, ARM requests)."""
        clients = EstateClients(Estate(estate))
        pipeline = Pipeline(
            store=self.store,
            outbox=self.sink,
            enqueue=self.queue.send,
            config=RulesConfig(),
            scope=Scope((SUB,)),
            window_seconds=0.0,
        )
        pipeline.intake(events)
        self.sink.transitions.clear()

        async def go() -> None:
            for target in self.queue.drain():
                result = await pipeline.evaluate_window(target, readers_for(clients))
                assert result.status is WindowStatus.DONE, result.error

        try:
            runtime.run(go(), timeout=60)
        finally:
            runtime.run(clients.close(), timeout=30)
        requests = [f"{method} {path}" for method, path in clients.log.requests]
        return list(self.sink.transitions), requests


def opened_and_resolved(transitions: list[Transition]) -> set[tuple[str, str]]:
    return {(t.kind.value, t.rule_id) for t in transitions if t.kind.value in ("opened", "resolved")}


def linked_reads(requests: list[str]) -> list[str]:
    return [r for r in requests if r.startswith(VM_LIST) or "backupInstances" in r or "backupPolicies" in r]


def test_an_account_event_carries_the_vm_and_backup_findings_forward_unread(tmp_path: Path) -> None:
    world = World(tmp_path, baseline=linked())
    stored = world.store.get_account(account_id(NAME))
    assert stored is not None and stored.value.linked_evidence and stored.value.vm_ids
    assert {f["rule"] for f in stored.value.findings} >= {"unmanaged-disk", "azure-backup"}

    # SFTP turned on; meanwhile the VM was deleted (its own event comes next) and the backup too.
    after = linked(eb.member(NAME, isSftpEnabled=True), vm=False, backup=False)
    transitions, requests = world.run(after, account_event(1))

    assert linked_reads(requests) == []  # neither the VM list nor the backup instances were read
    assert f"GET {account_id(NAME)}" in requests
    assert opened_and_resolved(transitions) == {("opened", "sftp-enabled")}  # not attributed to alice
    state = world.store.get_account(account_id(NAME))
    assert state is not None and state.value.linked_evidence
    assert state.value.vm_ids == stored.value.vm_ids  # the VM's own event still finds the account
    assert state.value.backup_instance_ids == stored.value.backup_instance_ids
    assert {f["rule"] for f in state.value.findings} >= {"unmanaged-disk", "azure-backup", "sftp-enabled"}

    # The VM's delete event judges its rule: resolved, attributed to whoever deleted it.
    transitions, requests = world.run(after, vm_delete_event())
    assert opened_and_resolved(transitions) == {("resolved", "unmanaged-disk")}
    assert transitions[0].provenance.changed_by.startswith("dave@contoso.com")
    assert any(r.startswith(VM_LIST) for r in requests)


def test_a_first_evaluation_reads_the_vms_and_backup_instances(tmp_path: Path) -> None:
    world = World(tmp_path, baseline=None)
    transitions, requests = world.run(linked(), account_event(1))

    assert any(r.startswith(VM_LIST) for r in requests)
    assert any("backupInstances" in r for r in requests)
    assert {("opened", "unmanaged-disk"), ("opened", "azure-backup")} <= opened_and_resolved(transitions)
    state = world.store.get_account(account_id(NAME))
    assert state is not None and state.value.linked_evidence


def test_an_account_last_read_outside_every_perimeter_reads_them_once_it_is_in_one(tmp_path: Path) -> None:
    outside = eb.merge(eb.outsider(NAME), eb.legacy_vm(NAME))
    world = World(tmp_path, baseline=outside)
    stored = world.store.get_account(account_id(NAME))
    assert stored is not None and not stored.value.linked_evidence  # no feature is read outside

    transitions, requests = world.run(linked(), account_event(1))  # now associated
    assert any(r.startswith(VM_LIST) for r in requests)
    assert {("opened", "unmanaged-disk"), ("opened", "azure-backup")} <= opened_and_resolved(transitions)

    # From then on the account's events leave them to their own events.
    _, requests = world.run(linked(eb.member(NAME, isSftpEnabled=True)), account_event(2))
    assert linked_reads(requests) == []


def test_a_deleted_account_resolves_every_finding_and_a_recreated_one_is_read_in_full(tmp_path: Path) -> None:
    world = World(tmp_path, baseline=linked())
    gone = eb.merge(eb.perimeter(NAME), eb.legacy_vm(NAME))  # the account is gone; the VM still points at it

    transitions, _ = world.run(gone, account_event(1, delete=True))
    resolved = {rule for kind, rule in opened_and_resolved(transitions) if kind == "resolved"}
    assert {"unmanaged-disk", "azure-backup"} <= resolved
    tombstone = world.store.get_account(account_id(NAME))
    assert tombstone is not None and tombstone.value.is_tombstone

    transitions, requests = world.run(linked(), account_event(2))  # recreated with the same name
    assert any(r.startswith(VM_LIST) for r in requests) and any("backupInstances" in r for r in requests)
    opened = {t.rule_id: t for t in transitions if t.kind.value == "opened"}
    assert {"unmanaged-disk", "azure-backup"} <= set(opened)
    assert opened["unmanaged-disk"].occurrence == 2  # a new occurrence, not a re-send of the first
