"""Issue 12, items 1 and 2: bounded invocations that fan out over the queue, and the fewest reads.

Estates are ``bench.estates.build_estate`` copies of the sample's clean account (built from the
official examples), every one associated with the sample perimeter through a copy of the
sample's own resource association. Work messages go through their real encoding
(``encode_work``/``decode_any``) into a list that plays the queue; each message runs with fresh
readers, as each invocation does.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.estates import SUB, account_ids, build_estate
from shared.adapters import runtime
from shared.adapters.arm_reader import ArmReader, TargetReads
from shared.adapters.estate import Estate
from shared.adapters.notify.teams import build_card
from shared.adapters.queue import decode_any, decode_message, encode_message, encode_work
from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.core.changes import PERIMETER_RULES_CHANGED, Provenance, Target, TargetKind, transition_to_dict
from shared.core.config import RulesConfig
from shared.core.model import StorageAccountSnapshot
from shared.core.targeting import Scope
from shared.core.work import Work, WorkKind
from shared.entrypoints.replay import MemoryQueue, record_baseline_estate
from shared.service.pipeline import CollectingSink, Pipeline, Readers, WindowStatus
from shared.wiring import EstateClients, readers_for

PERIMETER = (
    f"/subscriptions/{SUB}/resourceGroups/rg-network/providers/Microsoft.Network/networkSecurityPerimeters/nsp-contoso-data"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def perimeter_estate(accounts: int, broad: bool = False) -> dict[str, Any]:
    """``accounts`` accounts, all associated with the sample perimeter (``broad``: its profile gained
    an inbound 0.0.0.0/0 rule, raising accessRulesVersion, as ARM does)."""
    estate = build_estate(accounts, in_perimeter_every=1)
    template_key = next(k for k in estate if "/resourceAssociations/" in k)
    template = estate[template_key]
    for key in [k for k in estate if "/resourceAssociations/" in k]:
        del estate[key]
    for account in account_ids(estate):
        name = account.rsplit("/", 1)[-1]
        body = copy.deepcopy(template)
        body["id"] = f"{PERIMETER}/resourceAssociations/assoc-{name}"
        body["name"] = f"assoc-{name}"
        body["properties"]["privateLinkResource"]["id"] = account
        estate[body["id"]] = body
    if broad:
        for key, body in estate.items():
            if "/networkSecurityPerimeterConfigurations/" in key:
                profile = body["properties"]["profile"]
                profile["accessRules"].append(
                    {"name": "allow-everyone", "properties": {"addressPrefixes": ["0.0.0.0/0"], "direction": "Inbound"}}
                )
                profile["accessRulesVersion"] += 1
    return estate


def make(store: Any, sink: CollectingSink, work: list[Work], clock: Clock, **kwargs: Any) -> Pipeline:
    def send(item: Work, delay: float) -> None:
        decoded, _ = decode_any(encode_work(item, clock() + delay))  # through the wire format
        assert isinstance(decoded, Work)
        work.append(decoded)

    return Pipeline(
        store=store,
        outbox=sink,
        enqueue=MemoryQueue().send,
        config=RulesConfig(),
        scope=Scope((SUB,)),
        window_seconds=0.0,
        clock=clock,
        enqueue_work=send,
        **kwargs,
    )


def perimeter_change(p: Pipeline, readers: Readers) -> WindowStatus:
    target = Target(TargetKind.PERIMETER, PERIMETER)
    p.store.add_pending(target, Provenance(event_ids=("evt-rules",)), 0.0, p.clock())
    return runtime.run(p.evaluate_window(target, readers)).status


def drain(p: Pipeline, work: list[Work], readers: Any) -> list[int]:
    """Run queued messages until none is left; how many accounts each invocation evaluated."""
    evaluated = []
    while work:
        result = runtime.run(p.run_work(work.pop(0), readers()))
        evaluated.append(result.evaluated)
    return evaluated


def baseline(tmp_path: Path, accounts: int) -> SqliteStateStore:
    store = SqliteStateStore(str(tmp_path / "state.sqlite"))
    record_baseline_estate(Estate(perimeter_estate(accounts)), store, RulesConfig())
    return store


@pytest.mark.parametrize("accounts", [40, 250])
def test_perimeter_change_reads_each_account_once_and_fans_out(tmp_path: Path, accounts: int) -> None:
    """N + 5 ARM reads at most (here N + 1: the association list once, then each account's NSP
    configuration; the account itself comes from its stored state). On 02faea9: 8 N + 2."""
    store = baseline(tmp_path, accounts)
    clients = EstateClients(Estate(perimeter_estate(accounts, broad=True)))
    sink, work, clock = CollectingSink(), [], Clock()
    p = make(store, sink, work, clock, batch_size=100)
    assert perimeter_change(p, readers_for(clients)) is WindowStatus.DONE
    assert len(work) == (0 if accounts <= 100 else 3)  # more than one batch: one message per batch
    drain(p, work, lambda: readers_for(clients))
    reads = [path for method, path in clients.log.requests if method == "GET"]
    assert len(reads) <= accounts + 5
    assert len(reads) == accounts + 1
    assert sum(1 for r in reads if r.endswith("/resourceAssociations")) == 1
    opened = Counter(t.resource_id for t in sink.transitions if t.rule_id == "inbound-rule-too-broad")
    assert len(opened) == accounts and set(opened.values()) == {1}
    # Once (a carried transition recorded again by a concurrent reader of the profile row has the
    # same key, which the outbox keeps once).
    assert len({(t.key, t.occurrence) for t in sink.transitions if t.rule_id == PERIMETER_RULES_CHANGED}) == 1
    # Its card and webhook body list the accounts it affects: all of them (one profile), 20 shown.
    change = next(t for t in sink.transitions if t.rule_id == PERIMETER_RULES_CHANGED)
    assert sorted(a.lower() for a in change.accounts) == sorted(
        a.lower() for a in account_ids(perimeter_estate(accounts))
    )
    data = transition_to_dict(change)
    assert len(data["accounts"]) == 20 and data["accounts_more"] == accounts - 20
    facts = [
        f for n in build_card(data)["attachments"][0]["content"]["body"] if n["type"] == "FactSet" for f in n["facts"]
    ]
    assert {"title": "…", "value": f"and {accounts - 20} more"} in facts
    assert all(t.provenance.event_ids == ("evt-rules",) for t in sink.transitions)
    # The account side (kept from the stored state) is still what the sweep compares.
    stored = store.get_account(account_ids(perimeter_estate(1))[0])
    assert stored is not None and stored.value.facts["name"] == "stbench00000"


def test_a_budget_expiring_mid_batch_requeues_the_rest_and_everything_is_evaluated_once(tmp_path: Path) -> None:
    """A fake clock: every account read takes 1 s, the budget is 10 s. Each invocation starts at
    most 10 accounts and re-queues the rest; in the end each account was read and reported once."""
    accounts = 130
    store = baseline(tmp_path, accounts)
    clients = EstateClients(Estate(perimeter_estate(accounts, broad=True)))
    sink, work, clock = CollectingSink(), [], Clock()
    reads: Counter[str] = Counter()

    class Slow(ArmReader):
        async def read_perimeter_side(self, account_id: str, facts: Any = None) -> StorageAccountSnapshot:
            reads[account_id.lower()] += 1
            clock.now += 1.0
            return await super().read_perimeter_side(account_id, facts)

    def readers() -> Readers:
        accounts_reader = Slow(clients)
        return Readers(accounts_reader, TargetReads(clients, on_members=accounts_reader.remember_members))

    p = make(store, sink, work, clock, batch_size=50, budget_seconds=10.0, concurrency=1)
    assert perimeter_change(p, readers()) is WindowStatus.DONE
    assert [len(w.accounts) for w in work] == [50, 50, 30]
    per_invocation = drain(p, work, readers)
    assert max(per_invocation) <= 10 and len(per_invocation) >= accounts // 10
    assert sum(per_invocation) == accounts
    assert len(reads) == accounts and set(reads.values()) == {1}
    # One finding per account and one rules change (the outbox keeps a key once).
    assert len({(t.key, t.occurrence) for t in sink.transitions}) == accounts + 1


class Killed(BaseException):
    """The host killing the invocation (not an Exception: nothing in the pipeline catches it)."""


def test_a_killed_batch_is_redelivered_and_evaluated_without_duplicates(tmp_path: Path) -> None:
    accounts = 60
    store = baseline(tmp_path, accounts)
    clients = EstateClients(Estate(perimeter_estate(accounts, broad=True)))
    sink, work, clock = CollectingSink(), [], Clock()
    p = make(store, sink, work, clock, batch_size=30)
    assert perimeter_change(p, readers_for(clients)) is WindowStatus.DONE
    first = work[0]
    calls = 0

    class Dying(ArmReader):
        async def read_perimeter_side(self, account_id: str, facts: Any = None) -> StorageAccountSnapshot:
            nonlocal calls
            calls += 1
            if calls == 12:
                raise Killed
            return await super().read_perimeter_side(account_id, facts)

    with pytest.raises(Killed):
        runtime.run(p.run_work(first, Readers(Dying(clients), TargetReads(clients))))
    assert work[0] is first  # not acknowledged: the queue makes it visible again
    drain(p, work, lambda: readers_for(clients))  # the redelivery, then the second batch
    findings = Counter(t.key for t in sink.transitions if t.rule_id == "inbound-rule-too-broad")
    assert len(findings) == accounts and set(findings.values()) == {1}  # each account's once
    assert len({(t.key, t.occurrence) for t in sink.transitions}) == accounts + 1


def test_failed_accounts_of_a_batch_are_requeued_with_backoff_not_dropped(tmp_path: Path) -> None:
    accounts = 5
    store = baseline(tmp_path, accounts)
    clients = EstateClients(Estate(perimeter_estate(accounts, broad=True)))
    sink, work, clock = CollectingSink(), [], Clock()
    p = make(store, sink, work, clock)
    bad = account_ids(perimeter_estate(accounts))[2]

    class Failing(ArmReader):
        async def read_perimeter_side(self, account_id: str, facts: Any = None) -> StorageAccountSnapshot:
            if account_id == bad:
                raise ConnectionError("ARM unreachable")
            return await super().read_perimeter_side(account_id, facts)

    batch = Work(WorkKind.ACCOUNTS, tuple(account_ids(perimeter_estate(accounts))), TargetKind.PERIMETER, origin="t")
    result = runtime.run(p.run_work(batch, Readers(Failing(clients), TargetReads(clients))))
    assert result.evaluated == accounts - 1 and result.failed == (bad,)
    assert [(w.accounts, w.attempts) for w in work] == [((bad,), 1)]
    drain(p, work, lambda: readers_for(clients))
    assert Counter(t.resource_id for t in sink.transitions if t.rule_id == "inbound-rule-too-broad")[bad] == 1


def test_work_messages_round_trip_and_window_messages_still_decode() -> None:
    work = Work(
        WorkKind.ACCOUNTS,
        ("/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a",),
        TargetKind.PERIMETER,
        Provenance(event_ids=tuple(f"e{i}" for i in range(500))),
        (("/p", ("/v",)),),
        attempts=2,
        origin="perimeter:/p",
    )
    decoded, not_before = decode_any(encode_work(work, 5.0))
    assert isinstance(decoded, Work) and not_before == 5.0
    assert decoded.accounts == work.accounts and decoded.cause is TargetKind.PERIMETER and decoded.attempts == 2
    assert decoded.vault_members == (("/p", ("/v",)),) and decoded.provenance.event_ids == work.provenance.event_ids
    page = Work(WorkKind.SWEEP, subscription=SUB, page="https://next", full=False)
    assert decode_any(encode_work(page, 0.0))[0] == page
    target = Target(TargetKind.ACCOUNT, "/subscriptions/x")
    assert decode_any(encode_message(target, 1.0)) == (target, 1.0) == decode_message(encode_message(target, 1.0))
    for bad, field in [
        ({"work": {"kind": "later"}}, "work.kind"),
        ({"work": {"kind": "accounts", "accounts": [], "cause": "account", "provenance": {}}}, "work.accounts"),
        ({"work": {"kind": "accounts", "accounts": ["/a"], "cause": "x", "provenance": {}}}, "work.cause"),
        ({"work": {"kind": "sweep"}}, "work.subscription"),
    ]:
        with pytest.raises(ValueError, match=field):
            decode_any(json.dumps({**bad, "not_before": 0}))


def test_graph_sweep_detects_new_vhd_and_backup_changes(tmp_path: Path) -> None:
    """The frequent sweep's summary cannot show a VM that starts keeping VHDs in an account or a
    new blob backup instance; the vhd-vms and blob-backups queries can."""
    store = SqliteStateStore(str(tmp_path / "s.sqlite"))
    record_baseline_estate(Estate(build_estate(40)), store, RulesConfig())
    clients = EstateClients(Estate(build_estate(40, vhd_vms={10}, backups={20})))
    sink, work, clock = CollectingSink(), [], Clock()
    p = make(store, sink, work, clock)
    runtime.run(p.plan_sweep([SUB], full=False))
    assert [w.kind for w in work] == [WorkKind.SWEEP]
    drain(p, work, lambda: readers_for(clients))
    opened = {(t.rule_id, t.resource_id.rsplit("/", 1)[-1]) for t in sink.transitions}
    assert ("unmanaged-disk", "stbench00010") in opened
    assert ("azure-backup", "stbench00020") in opened
    gets = [path for method, path in clients.log.requests if method == "GET"]
    read = {g.split("/storageAccounts/", 1)[1].split("/", 1)[0] for g in gets if "/storageAccounts/" in g}
    assert read == {"stbench00010", "stbench00020"}  # only the two accounts whose VMs or backups changed
    posts = [path for method, path in clients.log.requests if method == "POST"]
    assert len(posts) == 3  # accounts, vhd-vms, blob-backups
