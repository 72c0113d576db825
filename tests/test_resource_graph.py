"""Resource Graph reads (shared/adapters/resource_graph.py) through the real
azure-mgmt-resourcegraph client: the three queries answered by the estate's narrow double, paging
with $skipToken, the quota back-off, and the sweep's change test against stored state."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from bench.estates import SUB, build_estate
from bench.run import live
from bench.server import GraphQuota as ServerQuota
from bench.server import serving
from shared.adapters import runtime
from shared.adapters.arm_reader import ArmReader
from shared.adapters.estate import Estate
from shared.adapters.resource_graph import (
    QUERIES,
    GraphQuota,
    ResourceGraphReader,
    parse_quota_reset,
    query_name,
)
from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.core.config import RulesConfig
from shared.core.state.base import AccountState, AssociationState
from shared.core.summary import (
    AccountSummary,
    BlobBackupInstance,
    GraphInventory,
    VhdVm,
    summary_digest,
    summary_of_snapshot,
)
from shared.entrypoints.replay import record_baseline_estate
from shared.wiring import EstateClients
from tests.fakes.clock import VirtualClock

SAMPLES = Path(__file__).resolve().parents[1] / "shared" / "samples"
GRAPH_URL = "https://management.azure.com/providers/Microsoft.ResourceGraph/resources?api-version=2021-03-01"


@pytest.fixture
def sample() -> Iterator[EstateClients]:
    clients = EstateClients(Estate.load(SAMPLES / "estate.json"))
    yield clients
    runtime.run(clients.close())


def graph_posts(clients: EstateClients) -> int:
    return sum(1 for method, path in clients.log.requests if method == "POST")


# -- the three queries over the sample estate ---------------------------------------------------


def test_accounts_query_returns_every_account_with_its_summary(sample: EstateClients) -> None:
    reader = ResourceGraphReader(sample.graph())
    summaries = runtime.run(reader.account_summaries([SUB]))
    estate_ids = set(sample.estate.ids_of_type("microsoft.storage/storageaccounts"))
    assert {s.id for s in summaries} == estate_ids
    by_name = {s.name: s for s in summaries}
    assert by_name["stcontososftp01"].is_sftp_enabled
    assert all(isinstance(s, AccountSummary) and len(s.digest) == 24 for s in summaries)
    assert reader.queries_sent == graph_posts(sample) == 1


def test_graph_digest_equals_the_digest_of_the_arm_snapshot_for_every_account(sample: EstateClients) -> None:
    # The sweep's change test compares a digest from Resource Graph with one stored from an ARM
    # read: for an unchanged account they must be equal, or every sweep re-reads everything.
    summaries = runtime.run(ResourceGraphReader(sample.graph()).account_summaries([SUB]))

    async def snapshots() -> list[Any]:
        reader = ArmReader(sample)
        return [await reader.read_account(s.id) for s in summaries]

    for summary, snapshot in zip(summaries, runtime.run(snapshots()), strict=True):
        assert summary.digest == summary_digest(summary_of_snapshot(snapshot)), summary.name
        assert AccountSummary.from_row({"id": snapshot.id, **summary_of_snapshot(snapshot)}) == summary


def test_vhd_vms_and_blob_backups(sample: EstateClients) -> None:
    reader = ResourceGraphReader(sample.graph())
    vms = runtime.run(reader.vhd_vms([SUB]))
    backups = runtime.run(reader.blob_backups([SUB]))
    assert [vm.id.rsplit("/", 1)[-1] for vm in vms] == ["vm-legacy-app"]
    assert len(vms[0].vhd_uris) == 3  # the OS disk and two data disks
    assert vms[0].account_names == {"stcontosovhd01"}
    assert sorted(b.storage_account_id.rsplit("/", 1)[-1] for b in backups) == ["stcontosobkp01", "stcontosobkp02"]
    assert all(b.policy_id.endswith(("policy-blob-vaulted", "policy-blob-operational")) for b in backups)
    assert all(b.protection_state == "ProtectionConfigured" for b in backups)


def test_inventory_runs_the_three_queries_and_scopes_by_subscription_or_management_group(
    sample: EstateClients,
) -> None:
    reader = ResourceGraphReader(sample.graph())
    inventory = runtime.run(reader.inventory([SUB]))
    assert (len(inventory.accounts), len(inventory.vhd_vms), len(inventory.blob_backups)) == (15, 1, 2)
    assert inventory.queries == 3
    assert runtime.run(reader.account_summaries(["00000000-0000-0000-0000-000000000000"])) == []
    by_group = runtime.run(reader.account_summaries(management_groups=["contoso-root"]))
    assert {s.id for s in by_group} == {s.id for s in inventory.accounts}
    with pytest.raises(ValueError, match="subscriptions or management groups"):
        runtime.run(reader.account_summaries())


# -- paging -------------------------------------------------------------------------------------


def test_paging_over_2500_accounts_with_skip_token() -> None:
    clients = EstateClients(Estate(build_estate(2500)))
    reader = ResourceGraphReader(clients.graph())
    summaries = runtime.run(reader.account_summaries([SUB]))
    runtime.run(clients.close())
    assert len(summaries) == len({s.id for s in summaries}) == 2500
    assert reader.queries_sent == graph_posts(clients) == 3  # 1,000 + 1,000 + 500


def test_the_estate_keeps_pages_of_1000_and_answers_only_our_queries() -> None:
    estate = Estate(build_estate(1500))
    first = estate.resource_graph({"query": QUERIES["accounts"], "subscriptions": [SUB], "options": {"$top": 5000}})
    assert first.status == 400  # Resource Graph's maximum page is 1,000 rows
    page = json.loads(estate.resource_graph({"query": QUERIES["accounts"], "subscriptions": [SUB]}).body)
    assert (page["count"], page["totalRecords"], page["$skipToken"]) == (1000, 1500, "1000")
    # the same query re-wrapped is still ours; anything else is refused, not guessed at
    rewrapped = "\n\n".join(QUERIES["accounts"].split("\n"))
    assert query_name(rewrapped) == "accounts"
    other = estate.resource_graph({"query": "resources | where type =~ 'microsoft.storage/storageaccounts'"})
    assert other.status == 400 and json.loads(other.body)["error"]["code"] == "BadRequest"
    # answer() routes the POST (with its body) and still refuses other writes
    routed = estate.answer(
        "POST", GRAPH_URL, json.dumps({"query": QUERIES["vhd-vms"], "subscriptions": [SUB]}).encode()
    )
    assert routed.status == 200 and json.loads(routed.body)["data"] == []
    assert estate.answer("POST", f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/x").status == 405


def test_an_unknown_query_surfaces_as_an_sdk_error(sample: EstateClients) -> None:
    from azure.mgmt.resourcegraph.models import QueryRequest

    with pytest.raises(HttpResponseError) as refused:
        runtime.run(sample.graph().resources(QueryRequest(query="resources | take 1", subscriptions=[SUB])))
    assert refused.value.status_code == 400


def test_subscriptions_are_grouped_1000_per_request() -> None:
    client = FakeGraphClient(pages=1)
    subscriptions = [f"00000000-0000-0000-0000-{i:012d}" for i in range(1500)]
    runtime.run(ResourceGraphReader(client).account_summaries(subscriptions))
    assert [len(r.subscriptions) for r in client.requests] == [1000, 500]


# -- quota --------------------------------------------------------------------------------------


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.http_response = type("Http", (), {"status_code": status, "headers": headers})()


class FakeGraphClient:
    """Stands in for ResourceGraphClient: pages of one row, chosen quota headers, calls the hook."""

    def __init__(self, pages: int, remaining: list[str] | None = None, resets: str = "00:00:03") -> None:
        self.pages = pages
        self.remaining = remaining or []
        self.resets = resets
        self.requests: list[Any] = []

    async def resources(self, request: Any, raw_response_hook: Any = None) -> Any:
        from azure.mgmt.resourcegraph.models import QueryResponse

        n = len(self.requests)
        self.requests.append(request)
        headers = {"x-ms-user-quota-resets-after": self.resets}
        if n < len(self.remaining):
            headers["x-ms-user-quota-remaining"] = self.remaining[n]
        raw_response_hook(FakeResponse(200, headers))
        done = (n + 1) % self.pages == 0
        row = {"id": f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st{n}"}
        return QueryResponse(
            total_records=self.pages,
            count=1,
            result_truncated="false",
            data=[row],
            skip_token=None if done else str(n + 1),
        )


def test_quota_headers_make_the_reader_wait_for_the_window_to_reset() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    clock = [100.0]
    client = FakeGraphClient(pages=3, remaining=["1", "0", "5"], resets="00:00:03")
    reader = ResourceGraphReader(client, quota=GraphQuota(sleep, clock=lambda: clock[0]))
    summaries = runtime.run(reader.account_summaries([SUB]))
    assert len(summaries) == 3 and reader.queries_sent == 3
    assert slept == [3.0]  # after the page that left 0: wait out the window, once
    assert reader.quota.waits == 1
    assert [r.options.skip_token for r in client.requests] == [None, "1", "2"]


def test_no_wait_while_quota_remains_and_after_the_window_has_passed() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    clock = [100.0]
    quota = GraphQuota(sleep, clock=lambda: clock[0])
    quota.observe(200, {"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:00:02"})
    clock[0] += 2.5  # the window reset meanwhile
    runtime.run(quota.acquire())
    quota.release()
    assert slept == []


def test_a_graph_429_without_retry_after_gets_one_from_the_quota_header() -> None:
    quota = GraphQuota()
    headers = {"x-ms-user-quota-remaining": "0", "x-ms-user-quota-resets-after": "00:00:04"}
    quota.observe(429, headers)
    assert headers["Retry-After"] == "4"  # what azure-core's RetryPolicy (the only retry layer) honours
    assert quota.throttled == 1 and quota.remaining == 0
    assert parse_quota_reset("00:01:02.5") == 62.5
    assert parse_quota_reset("garbage") == 5.0


class _WiredQuota(GraphQuota):
    """The reader's quota, telling the virtual clock while a query is on the wire (so the server's
    window cannot reset under a query the client already counted)."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock.sleep, clock=clock)
        self.virtual = clock

    async def acquire(self) -> None:
        await super().acquire()
        self.virtual.wire_start()

    def release(self) -> None:
        self.virtual.wire_end()
        super().release()


def test_over_tls_a_small_quota_is_waited_out_and_never_exceeded() -> None:
    # 2,500 accounts = 3 pages, plus the VHD and backup queries: 5 queries against 2 per second.
    # Virtual time (the server's window and the reader's waits on one clock that moves only when the
    # reader waits): a slow machine cannot reset a window early and save a wait.
    estate = Estate(build_estate(2500, vhd_vms={3}, backups={4}))
    clock = VirtualClock()
    start = clock()
    with serving(estate, latency=0.0, graph_quota=ServerQuota(limit=2, window=1.0, clock=clock)) as server:
        clients = live(server)
        reader = ResourceGraphReader(clients.graph(), quota=_WiredQuota(clock))
        inventory = runtime.run(reader.inventory([SUB]))
        runtime.run(clients.close())
    assert len(inventory.accounts) == 2500 and len(inventory.vhd_vms) == 1 and len(inventory.blob_backups) == 1
    assert inventory.queries == reader.queries_sent == 5
    assert server.graph_throttled == 0  # the reader waited instead of meeting a 429
    # Two queries per window: 5 queries need three windows, so exactly two waits for a reset.
    assert reader.quota.waits == len(clock.sleeps) == 2
    assert clock() - start == pytest.approx(2.0)


# -- the sweep's change test --------------------------------------------------------------------


def test_inventory_names_what_changed_since_the_stored_state() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStateStore(str(Path(tmp) / "s.sqlite"))
        record_baseline_estate(Estate.load(SAMPLES / "estate.json"), store, RulesConfig())
        stored = {a.lower(): v.value for a in store.all_account_ids() if (v := store.get_account(a)) is not None}
        store.close()
    results: dict[str, set[str]] = {}
    reasons: dict[str, str | None] = {}
    for name in ("estate.json", "estate-changed.json"):
        clients = EstateClients(Estate.load(SAMPLES / name))
        inventory = runtime.run(ResourceGraphReader(clients.graph()).inventory([SUB]))
        runtime.run(clients.close())
        # what the graph sweep re-reads: what ``reason_to_evaluate`` names, plus stored accounts gone from the list
        listed = {s.id.lower() for s in inventory.accounts}
        changed = {s.id for s in inventory.accounts if inventory.reason_to_evaluate(s, stored.get(s.id.lower()))}
        changed |= {v.account_id for v in stored.values() if v.account_id.lower() not in listed}
        results[name] = {a.rsplit("/", 1)[-1] for a in changed}
        reasons = {s.name: inventory.reason_to_evaluate(s, stored.get(s.id.lower())) for s in inventory.accounts}
    assert results["estate.json"] == set()  # an unchanged estate: nothing to re-read
    # SFTP switched on (the summary shows it) and the legacy VM deleted (the VHD query shows it)
    assert results["estate-changed.json"] == {"stcontosoclean01", "stcontosovhd01"}
    assert reasons["stcontosoclean01"] == "summary" and reasons["stcontosovhd01"] == "unmanaged-disks"


def test_reason_to_evaluate() -> None:
    account = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stone"
    summary = AccountSummary(account, kind="StorageV2")
    vm = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
    inventory = GraphInventory(
        (summary,),
        (VhdVm(vm, ("https://stone.blob.core.windows.net/vhds/os.vhd",)),),
        (BlobBackupInstance("/x/backupInstances/b1", account.lower(), "/p"),),
    )
    perimeter = (AssociationState("/nsp", "assoc", "Enforced", "default"),)
    same = AccountState(
        account,
        associations=perimeter,
        vm_ids=(vm.lower(),),
        backup_instance_ids=("/x/backupinstances/b1",),
        summary_digest=summary.digest,
    )
    assert inventory.reason_to_evaluate(summary, None) == "new"
    assert inventory.reason_to_evaluate(summary, same) is None
    assert inventory.reason_to_evaluate(summary, replace(same, summary_digest="x")) == "summary"
    assert inventory.reason_to_evaluate(summary, replace(same, vm_ids=())) == "unmanaged-disks"
    assert inventory.reason_to_evaluate(summary, replace(same, backup_instance_ids=())) == "backup-instances"
    # outside a perimeter features are not read (nor stored): only the summary counts
    outside = replace(same, associations=(), vm_ids=(), backup_instance_ids=())
    assert inventory.reason_to_evaluate(summary, outside) is None


def test_summary_digest_is_null_safe_like_the_kql() -> None:
    row_with_nulls = {"id": "x", "kind": "StorageV2", "isSftpEnabled": None, "privateEndpoints": None}
    explicit = {
        "id": "x",
        "kind": "storagev2",
        "isSftpEnabled": False,
        "isNfsV3Enabled": False,
        "isHnsEnabled": False,
        "keySource": "Microsoft.Storage",
        "defaultAction": "Allow",
        "privateEndpoints": 0,
    }
    assert summary_digest(row_with_nulls) == summary_digest(explicit)
    assert AccountSummary.from_row(row_with_nulls).digest == summary_digest(explicit)
    assert summary_digest({**explicit, "isSftpEnabled": True}) != summary_digest(explicit)
