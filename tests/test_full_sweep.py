"""Issue 12, item 2: the full ARM sweep per page with the fewest reads that cannot miss an association.

Estates are ``bench.estates.build_estate`` copies of the sample's clean account (official example
shapes); every tenth one is associated with the sample perimeter through a copy of the sample's
own resource association. The estate transport pages the account list; its request log counts
every ARM read. Work messages go through their real encoding into a list that plays the queue.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

from bench.estates import SUB, account_ids, build_estate
from shared.adapters import runtime
from shared.adapters.estate import Estate
from shared.adapters.queue import decode_any, encode_work
from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.core.changes import Provenance
from shared.core.config import RulesConfig
from shared.core.membership import VERIFY_SWEEPS, in_slice, sweep_round
from shared.core.targeting import Scope
from shared.core.work import Work, WorkKind
from shared.entrypoints.replay import MemoryQueue
from shared.service.pipeline import CollectingSink, Pipeline
from shared.wiring import EstateClients, readers_for

PERIMETER = (
    f"/subscriptions/{SUB}/resourceGroups/rg-network/providers/Microsoft.Network/networkSecurityPerimeters/"
    "nsp-contoso-data"
)
DAY = 86_400.0
# Per member: object replication, lifecycle, inventory, blob service, file shares. Its backup
# instances come from the subscription's Backup vaults, listed once per invocation.
FEATURES = 5
OTHER_SUB = "0b5a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"  # a subscription outside the scope
EXTENSION_ROUTING = "/providers/Microsoft.DataProtection/backupInstances"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def estate(
    accounts: int, associated: set[int], configured: set[int] | None = None, backups: set[int] | None = None
) -> dict[str, Any]:
    """``accounts`` accounts; those in ``associated`` have an NSP configuration and an association in
    the sample perimeter's list; those in ``configured`` only the configuration (a perimeter the
    sweep cannot list associated them); those in ``backups`` a blob backup instance in the sample's
    vault (which, with its policies, is in the estate then)."""
    resources = build_estate(accounts, in_perimeter_every=accounts + 1, backups=backups)
    config_key = next(
        k for k in build_estate(1, in_perimeter_every=1) if "/networkSecurityPerimeterConfigurations/" in k
    )
    config_text = json.dumps(build_estate(1, in_perimeter_every=1)[config_key])
    template_key = next(k for k in resources if "/resourceAssociations/" in k)
    template = resources[template_key]
    for key in [k for k in resources if "/resourceAssociations/" in k]:
        del resources[key]
    ids = account_ids(resources)
    for i, account in enumerate(ids):
        name = account.rsplit("/", 1)[-1]
        if i not in associated:  # the sample's account is SecuredByPerimeter: outside (or Learning) it is not
            resources[account]["properties"]["publicNetworkAccess"] = "Enabled"
        if i in associated or i in (configured or set()):
            cfg = json.loads(config_text.replace("stbench00000", name))
            resources[cfg["id"]] = cfg
        if i in associated:
            body = copy.deepcopy(template)
            body["id"] = f"{PERIMETER}/resourceAssociations/assoc-{name}"
            body["name"] = f"assoc-{name}"
            body["properties"]["privateLinkResource"]["id"] = account
            resources[body["id"]] = body
    return resources


def _vault(subscription: str) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/rg-backup/providers/Microsoft.DataProtection/"
        "backupVaults/bv-contoso"
    )


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


def full_sweep(p: Pipeline, work: list[Work], clients: EstateClients) -> list[Work]:
    runtime.run(p.plan_sweep([SUB], full=True))
    done = []
    while work:
        item = work.pop(0)
        done.append(item)
        runtime.run(p.run_work(item, readers_for(clients)))
    return done


def gets(clients: EstateClients) -> list[str]:
    return [path for method, path in clients.log.requests if method == "GET"]


def test_full_sweep_of_10000_accounts_reads_within_the_goal(tmp_path: Path) -> None:
    """10,000 accounts, 10 % associated, 1 % with a blob backup instance, pages of 1,000: the exact
    read count, at most 7,000 on every day of the verification cycle. On 02faea9 26,003; 7,354 with
    k = 7."""
    accounts, page = 10_000, 1_000
    members = set(range(0, accounts, 10))
    backed_up = set(range(0, accounts, 100))  # members; ten per page
    resources = estate(accounts, members, backups=backed_up)
    clients = EstateClients(Estate(resources, page_size=page))
    store = SqliteStateStore(str(tmp_path / "s.sqlite"))
    sink, work, clock = CollectingSink(), [], Clock()
    p = make(store, sink, work, clock)
    done = full_sweep(p, work, clients)
    pages = accounts // page
    assert [w.kind for w in done[:1]] == [WorkKind.SWEEP]
    assert sum(1 for w in done if w.kind is WorkKind.SWEEP) == pages  # one message per page
    ids = account_ids(estate(accounts, members))
    round_ = sweep_round(clock())
    sliced = sum(1 for i, a in enumerate(ids) if i not in members and in_slice(a, round_, p.verify_sweeps))
    reads = gets(clients)
    kinds = Counter(
        "list"
        if r.endswith("/storageAccounts")
        else "perimeters"
        if r.endswith("/networkSecurityPerimeters")
        else "associations"
        if r.endswith("/resourceAssociations")
        else "nsp"
        if r.endswith("/networkSecurityPerimeterConfigurations")
        else "vms"
        if r.endswith("/virtualMachines")
        else "vaults"
        if r.endswith("/backupVaults")
        else "extension"
        if r.endswith(EXTENSION_ROUTING)
        else "vault-instances"
        if r.endswith("/backupInstances")
        else "policies"
        if "/backupPolicies/" in r
        else "feature"
        for r in reads
    )
    # Per page: the page, the subscription's perimeters and their association lists (one perimeter),
    # the VM list, the Backup vaults and the one vault's instances, the one backup policy; per member
    # its NSP configuration and its features (no per-account backup read); per slice account its
    # NSP configuration.
    assert kinds == Counter(
        list=pages,
        perimeters=pages,
        associations=pages,
        vms=pages,
        vaults=pages,
        **{"vault-instances": pages},
        policies=pages,
        nsp=len(members) + sliced,
        feature=FEATURES * len(members),
    )
    expected = 7 * pages + (1 + FEATURES) * len(members) + sliced
    assert len(reads) == expected  # 70 + 6,000 + 850 = 6,920 (k = 11; the largest of its days)
    assert len(reads) <= 7_000  # the goal
    # Every day's slice (the k days that verify every account once) keeps the sweep within the goal.
    others = [a for i, a in enumerate(ids) if i not in members]
    assert p.verify_sweeps == VERIFY_SWEEPS == 11
    for day in range(round_, round_ + p.verify_sweeps):
        slice_ = sum(1 for a in others if in_slice(a, day, p.verify_sweeps))
        assert 7 * pages + (1 + FEATURES) * len(members) + slice_ <= 7_000, day
    assert sum(sum(1 for d in range(round_, round_ + p.verify_sweeps) if in_slice(a, d, 11)) for a in others) == len(
        others
    )  # each account in exactly one of them
    assert not any("/storageAccounts/" in r and r.rsplit("/", 1)[-1].startswith("stbench") for r in reads)
    # Every account is recorded: members with their perimeter, the others in none.
    assert len(store.all_account_ids()) == accounts
    member = store.get_account(ids[10])
    outsider = store.get_account(ids[11])
    assert member is not None and [a.perimeter_id.lower() for a in member.value.associations] == [PERIMETER.lower()]
    assert outsider is not None and outsider.value.associations == () and outsider.value.facts["name"] == "stbench00011"
    # The backup instances from the vault listing are those the account's own read finds.
    protected = store.get_account(ids[100])
    own_instances = tuple(
        key.lower()
        for key, body in resources.items()
        if key.lower().startswith(f"{_vault(SUB)}/backupInstances/".lower())
        and str(((body.get("properties") or {}).get("dataSourceInfo") or {}).get("resourceID", "")).lower()
        == ids[100].lower()
    )
    assert len(own_instances) == 1
    assert protected is not None and protected.value.backup_instance_ids == own_instances
    assert [t.resource_id for t in sink.transitions if t.rule_id == "azure-backup"] == [
        ids[i] for i in sorted(backed_up)
    ]


def test_a_member_of_an_unlistable_perimeter_is_found_within_k_sweeps(tmp_path: Path) -> None:
    accounts = 50
    ids = account_ids(estate(accounts, set()))
    hidden = 7  # configured, in no association list the sweep can read, not hinted
    store = SqliteStateStore(str(tmp_path / "s.sqlite"))
    sink, work, clock = CollectingSink(), [], Clock()
    p = make(store, sink, work, clock)
    clients = EstateClients(Estate(estate(accounts, set(), {hidden}), page_size=20))
    found_on = None
    for sweep in range(p.verify_sweeps):
        clock.now += DAY
        full_sweep(p, work, clients)
        stored = store.get_account(ids[hidden])
        assert stored is not None
        if stored.value.associations:
            found_on = sweep
            break
    assert found_on is not None  # within k daily sweeps
    # Every account was verified exactly once in those k sweeps (a rotating, deterministic slice).
    verified = Counter(
        r.split("/storageAccounts/", 1)[1].split("/", 1)[0]
        for r in gets(clients)
        if r.endswith("/networkSecurityPerimeterConfigurations")
    )
    if found_on == p.verify_sweeps - 1:
        assert set(verified.values()) == {1} and len(verified) == accounts


def test_a_hinted_account_is_confirmed_and_a_dissociated_member_resolved(tmp_path: Path) -> None:
    accounts = 30
    ids = account_ids(estate(accounts, set()))
    store = SqliteStateStore(str(tmp_path / "s.sqlite"))
    sink, work, clock = CollectingSink(), [], Clock()
    p = make(store, sink, work, clock, verify_sweeps=10_000)  # no slice to speak of
    # Day 1: account 3 associated (in the list), account 5 hinted only (SecuredByPerimeter,
    # perimeter out of scope).
    first = estate(accounts, {3}, {5})
    first[ids[5]]["properties"]["publicNetworkAccess"] = "SecuredByPerimeter"
    full_sweep(p, work, EstateClients(Estate(first, page_size=10)))
    for index in (3, 5):
        stored = store.get_account(ids[index])
        assert stored is not None and stored.value.associations, index
    # Day 2: account 3 dissociated (no list entry, no configuration): read as a stored member and
    # recorded in no perimeter.
    clock.now += DAY
    second = estate(accounts, set(), {5})
    second[ids[5]]["properties"]["publicNetworkAccess"] = "SecuredByPerimeter"
    clients = EstateClients(Estate(second, page_size=10))
    full_sweep(p, work, clients)
    stored = store.get_account(ids[3])
    assert stored is not None and stored.value.associations == ()
    verified = {
        r.split("/storageAccounts/", 1)[1].split("/", 1)[0]
        for r in gets(clients)
        if r.endswith("/networkSecurityPerimeterConfigurations")
    }
    assert {"stbench00003", "stbench00005"} <= verified
    changed = [t for t in sink.transitions if t.resource_id.lower() == ids[3].lower()]
    assert any(t.rule_id == "perimeter-association-changed" for t in changed)


def test_a_stored_account_no_longer_listed_is_resolved_by_the_last_page(tmp_path: Path) -> None:
    accounts = 25
    ids = account_ids(estate(accounts, set()))
    store = SqliteStateStore(str(tmp_path / "s.sqlite"))
    sink, work, clock = CollectingSink(), [], Clock()
    p = make(store, sink, work, clock)
    full_sweep(p, work, EstateClients(Estate(estate(accounts, {4}), page_size=10)))
    assert store.get_account(ids[4]) is not None
    clock.now += DAY
    gone = estate(accounts, set())
    del gone[ids[4]]
    full_sweep(p, work, EstateClients(Estate(gone, page_size=10)))
    stored = store.get_account(ids[4])
    assert stored is None or stored.value.is_tombstone


def test_backup_instances_in_a_vault_of_another_subscription_are_read_per_account(tmp_path: Path) -> None:
    """The subscription's vault listing cannot see a vault in another subscription; an account whose
    stored state names an instance the listing does not hold is read through extension routing
    (which sees every vault), so the sweep neither resolves that finding nor flaps."""
    accounts = 20
    ids = account_ids(estate(accounts, set()))
    resources = estate(accounts, {3, 4}, backups={4})  # 4: in the sweep's own subscription's vault
    # Account 3's instance (and its vault and policies) in a subscription outside the scope.
    own = {k: v for k, v in resources.items() if k.startswith(_vault(SUB)) and "/backupInstances/" not in k}
    for key, body in own.items():
        resources[key.replace(SUB, OTHER_SUB)] = json.loads(json.dumps(body).replace(SUB, OTHER_SUB))
    own_instance = next(k for k in resources if k.startswith(f"{_vault(SUB)}/backupInstances/stbench00004-"))
    foreign = json.loads(
        json.dumps(resources[own_instance]).replace(SUB, OTHER_SUB).replace("stbench00004", "stbench00003")
    )
    foreign["properties"]["dataSourceInfo"]["resourceID"] = ids[3]
    resources[foreign["id"]] = foreign
    store = SqliteStateStore(str(tmp_path / "s.sqlite"))
    sink, work, clock = CollectingSink(), [], Clock()
    p = make(store, sink, work, clock)
    clients = EstateClients(Estate(resources, page_size=10))
    # The account's own event reads it through extension routing: the foreign instance is found.
    runtime.run(p.evaluate_account(ids[3], Provenance(source="event"), readers_for(clients)))
    stored = store.get_account(ids[3])
    assert stored is not None and stored.value.backup_instance_ids == (foreign["id"].lower(),)
    clock.now += DAY
    clients = EstateClients(Estate(resources, page_size=10))
    full_sweep(p, work, clients)
    extension = [r for r in gets(clients) if r.endswith(EXTENSION_ROUTING)]
    assert extension == [f"{ids[3]}{EXTENSION_ROUTING}"]  # only the account the listing cannot cover
    for index, instance in ((3, foreign["id"]), (4, own_instance)):
        stored = store.get_account(ids[index])
        assert stored is not None and stored.value.backup_instance_ids == (instance.lower(),), index
    backup = [t for t in sink.transitions if t.rule_id == "azure-backup"]
    assert [(t.resource_id, t.kind.value) for t in backup] == [(ids[3], "opened"), (ids[4], "opened")]
    # The foreign instance is deleted: the next sweep's per-account read resolves it.
    clock.now += DAY
    del resources[foreign["id"]]
    full_sweep(p, work, EstateClients(Estate(resources, page_size=10)))
    stored = store.get_account(ids[3])
    assert stored is not None and stored.value.backup_instance_ids == ()
    assert [(t.resource_id, t.kind.value) for t in sink.transitions if t.rule_id == "azure-backup"][2:] == [
        (ids[3], "resolved")
    ]
