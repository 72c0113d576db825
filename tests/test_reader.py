"""The ARM reader against estates built from the official examples.

The bodies are the examples' own (renamed only where an id must point at the account under test),
so every assertion on a value here is a value of an official example that went through the real
azure-mgmt-* deserialisation. The request log of ``EstateClients`` shows what one read costs.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.exceptions import HttpResponseError

from shared.adapters import runtime
from shared.adapters.arm_reader import ArmReader
from shared.adapters.estate import Estate, Reply
from shared.core.config import RulesConfig
from shared.core.evaluate import evaluate
from shared.core.model import (
    AccessMode,
    AccessRule,
    AccountNotFound,
    InventoryPolicy,
    InventoryRule,
    LifecycleRule,
    ProvisioningIssue,
    UnmanagedDisk,
)
from shared.wiring import EstateClients
from tests import estate_builder as eb
from tests.sample_estate import (
    NSP_ID,
    PARTNER_SUB,
    RG_APPS,
    RG_DATA,
    SUB,
    account_id,
    child,
    example,
    renamed,
)

# The ids of the storage NSP configuration examples, kept verbatim.
EX_SUB, EX_RG, EX_NAME = "00000000-1111-2222-3333-444444444444", "res4410", "sto8607"
EX_ACCOUNT = f"/subscriptions/{EX_SUB}/resourceGroups/{EX_RG}/providers/Microsoft.Storage/storageAccounts/{EX_NAME}"
EX_PERIMETER = (
    "/subscriptions/dbedb4e0-40e6-4145-81f3-f1314c150774/resourceGroups/res4794"
    "/providers/Microsoft.Network/networkSecurityPerimeters/nsp1"
)
GUID = "ce2d5953-5c15-40ca-9d51-cc3f4a63b0f5"
OR_NAME = "sto2527"
TODAY = date(2026, 6, 1)  # the account of the object replication examples


def example_account(source: str = "storage-2025-08-01/StorageAccountGetProperties.json") -> dict[str, Any]:
    """The GET example's account, moved to the configuration examples' subscription/rg/name."""
    body = renamed(example(source), {"{subscription-id}": EX_SUB, "res9407": EX_RG, "sto8596": EX_NAME})
    return {body["id"]: body}


def as_configuration(body: dict[str, Any]) -> dict[str, Any]:
    return {body["id"]: body}


def perimeter_account(name: str, base: str = "general", **properties: Any) -> dict[str, Any]:
    return eb.member(name, base, **properties)


def path(account: str, suffix: str = "") -> str:
    return f"GET {account_id(account)}{suffix}"


def in_perimeter_requests(account: str, *, files: bool = True) -> list[str]:
    """The documented cost of reading one account in a perimeter (no CMK, no backup instances)."""
    expected = [
        path(account),
        path(account, "/networkSecurityPerimeterConfigurations"),
        path(account, "/objectReplicationPolicies"),
        path(account, "/managementPolicies/default"),
        path(account, "/inventoryPolicies"),
        path(account, "/blobServices/default"),
        path(account, "/providers/Microsoft.DataProtection/backupInstances"),
        f"GET /subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines",
    ]
    if files:
        expected.append(path(account, "/fileServices/default/shares"))
    return sorted(expected)


def count(clients: EstateClients, request: str) -> int:
    """How often ``request`` ("GET /path") was made, comparing paths case-insensitively like ARM."""
    return sum(n for key, n in clients.log.counts().items() if key.lower() == request.lower())


class FailingEstate(Estate):
    """An estate whose GETs of paths ending with ``suffix`` fail with ``status`` (``times`` times)."""

    CODES = {500: "InternalServerError", 403: "AuthorizationFailed", 503: "ServiceUnavailable"}

    def __init__(self, resources: dict[str, Any], suffix: str, status: int, times: int | None = None) -> None:
        super().__init__(resources)
        self.suffix, self.status, self.times = suffix.lower(), status, times

    def answer(self, method: str, url: str) -> Reply:
        if urlsplit(url).path.lower().endswith(self.suffix) and (self.times is None or self.times > 0):
            if self.times is not None:
                self.times -= 1
            body = {"error": {"code": self.CODES[self.status], "message": "injected by the test"}}
            return Reply(self.status, json.dumps(body).encode(), {"Content-Type": "application/json"})
        return super().answer(method, url)


# -- official property values through the SDK -------------------------------------------------------


def test_nsp_configuration_list_example_values() -> None:
    config = example("storage-2025-08-01/NetworkSecurityPerimeterConfigurationList.json")["value"][0]
    snapshot, _ = eb.read({**example_account(), **as_configuration(config)}, EX_ACCOUNT)
    (view,) = snapshot.perimeters
    assert view.configuration_name == "dbedb4e0-40e6-4145-81f3-f1314c150774.resourceAssociation1"
    assert view.perimeter_id == EX_PERIMETER
    assert view.perimeter_guid == GUID
    assert view.location == "East US"
    assert view.association_name == "association1"
    assert view.access_mode is AccessMode.ENFORCED and view.access_mode_raw == "Enforced"
    assert view.profile_name == "profile1"
    assert view.access_rules_version == 10
    assert view.access_rules == (AccessRule("inVpnRule", "Inbound", address_prefixes=("148.0.0.0/8", "152.4.6.0/24")),)
    assert view.provisioning_state == "Succeeded"
    assert view.provisioning_issues == ()
    assert snapshot.incomplete == ()


def test_nsp_configuration_get_example_with_provisioning_issue() -> None:
    config = example("storage-2025-06-01/NetworkSecurityPerimeterConfigurationGet.json")
    snapshot, _ = eb.read({**example_account(), **as_configuration(config)}, EX_ACCOUNT)
    (view,) = snapshot.perimeters
    assert view.provisioning_issues == (
        ProvisioningIssue(
            name="ConfigurationPropagationFailure",
            issue_type="ConfigurationPropagationFailure",
            severity="Error",
            description="Failed to update Network Security Perimeter association.",
        ),
    )
    assert view.association_name == "resourceAssociation1"
    (rule,) = view.access_rules
    assert rule.name == "allowedSubscriptions" and rule.is_inbound
    assert rule.subscriptions == ("/subscriptions/dbedb4e0-40e6-4145-81f3-f1314c150774",)


def test_suggested_resource_ids_of_a_provisioning_issue() -> None:
    config = example("storage-2025-06-01/NetworkSecurityPerimeterConfigurationGet.json")
    config["properties"]["provisioningIssues"][0]["properties"]["suggestedResourceIds"] = [eb.vault_id("kv1")]
    snapshot, _ = eb.read({**example_account(), **as_configuration(config)}, EX_ACCOUNT)
    assert snapshot.perimeters[0].provisioning_issues[0].suggested_resource_ids == (eb.vault_id("kv1"),)


def test_cmk_example_values() -> None:
    snapshot, _ = eb.read(example_account("storage-2025-08-01/StorageAccountGetPropertiesCMKEnabled.json"), EX_ACCOUNT)
    assert snapshot.encryption.key_source == "Microsoft.Keyvault"
    assert snapshot.encryption.key_vault_uri == "https://myvault8569.vault.azure.net"
    assert snapshot.encryption.key_name == "wrappingKey"
    assert snapshot.encryption.uses_customer_managed_key
    assert snapshot.encryption.key_vault_name == "myvault8569"
    assert (snapshot.kind, snapshot.sku, snapshot.location) == ("Storage", "Standard_GRS", "eastus2(stage)")
    assert snapshot.is_hns_enabled is True
    assert snapshot.network_acls.bypass == "AzureServices" and snapshot.network_acls.default_action == "Allow"
    assert (snapshot.id, snapshot.name, snapshot.subscription_id, snapshot.resource_group) == (
        EX_ACCOUNT,
        EX_NAME,
        EX_SUB,
        EX_RG,
    )
    assert not snapshot.in_perimeter


def test_get_properties_example_values() -> None:
    snapshot, _ = eb.read(example_account(), EX_ACCOUNT)
    assert snapshot.encryption.key_source == "Microsoft.Storage"
    assert not snapshot.encryption.uses_customer_managed_key
    assert snapshot.network_acls.resource_access_rules == (
        # The example's Synapse workspace, in the resource group our renaming moved it to.
        f"/subscriptions/a7e99807-abbf-4642-bdec-2c809a96a8bc/resourceGroups/{EX_RG}"
        "/providers/Microsoft.Synapse/workspaces/testworkspace",
    )
    assert snapshot.is_sftp_enabled is False and snapshot.is_nfs_v3_enabled is False


def test_nfsv3_example_values_and_no_file_share_read() -> None:
    snapshot, clients = eb.read(perimeter_account("stnfs01", "nfs"), "stnfs01")
    assert snapshot.is_nfs_v3_enabled is True
    assert snapshot.kind == "BlockBlobStorage"
    assert snapshot.sku == "Premium_LRS"
    assert snapshot.is_hns_enabled is True
    assert snapshot.network_acls.virtual_network_rules == (
        f"/subscriptions/{SUB}/resourceGroups/{RG_DATA}/providers/Microsoft.Network/virtualNetworks/net123/subnets/subnet12",
    )
    requests = eb.requests_of(clients)
    assert not [r for r in requests if "/fileServices/" in r]
    assert requests == in_perimeter_requests("stnfs01", files=False)


def test_object_replication_examples() -> None:
    single = example("storage-2026-09-01/StorageAccountGetObjectReplicationPolicy.json")
    policy_id = "2a20bb73-5717-4635-985a-5d4cf777438f"
    _, single_body = child(
        OR_NAME,
        f"objectReplicationPolicies/{policy_id}",
        single,
        {"{objectReplicationPolicy-Id}": policy_id},
    )
    resources = eb.merge(perimeter_account(OR_NAME), eb.replication_policies(OR_NAME), {single_body["id"]: single_body})
    snapshot, _ = eb.read(resources, OR_NAME)
    policies = {p.policy_id: p for p in snapshot.object_replication_policies}
    assert set(policies) == {
        "c6c23999-fd4e-433a-bcf9-1db69d27cd8a",
        "141d23dc-8958-4b48-b6e6-5a40bf1af116",
        policy_id,
    }
    assert policies["c6c23999-fd4e-433a-bcf9-1db69d27cd8a"].source_account == "sto2527"
    assert policies["c6c23999-fd4e-433a-bcf9-1db69d27cd8a"].destination_account == "destAccount1"
    assert policies["141d23dc-8958-4b48-b6e6-5a40bf1af116"].destination_account == "destAccount2"
    assert policies[policy_id].rule_count == 2  # the 2026-09-01 example has two rules and a policyId


def test_lifecycle_and_inventory_examples() -> None:
    resources = eb.merge(perimeter_account("stpol01"), eb.lifecycle_policy("stpol01"), eb.inventory_policy("stpol01"))
    snapshot, _ = eb.read(resources, "stpol01")
    assert snapshot.lifecycle_rules == (LifecycleRule("olcmtest", True, "Lifecycle"),)
    assert snapshot.inventory_policy == InventoryPolicy(
        True, (InventoryRule("inventoryPolicyRule1", True, "container1"),)
    )


def test_vm_vhd_uris_are_matched_to_the_account() -> None:
    vm_id = f"/subscriptions/{SUB}/resourceGroups/{RG_APPS}/providers/Microsoft.Compute/virtualMachines/"
    vm_id += "vm-legacy-app"
    resources = eb.merge(
        perimeter_account("stvhd01"),
        eb.legacy_vm("stvhd01"),
        eb.legacy_vm("stvhd011", vm_name="vm-elsewhere"),  # a longer name with the same prefix
    )
    snapshot, _ = eb.read(resources, "stvhd01")
    assert sorted(snapshot.unmanaged_disks, key=lambda d: d.disk_name) == [
        UnmanagedDisk(vm_id, "dataDisk0", "http://stvhd01.blob.core.windows.net/vhds/myDisk0.vhd", False),
        UnmanagedDisk(vm_id, "dataDisk1", "http://stvhd01.blob.core.windows.net/vhds/myDisk1.vhd", False),
        UnmanagedDisk(vm_id, "myVMosdisk", "http://stvhd01.blob.core.windows.net/vhds/myDisk.vhd", True),
    ]


def test_file_shares_nfs_and_smb() -> None:
    resources = eb.merge(
        perimeter_account("stfs01"), eb.nfs_share("stfs01", "share1235"), eb.smb_share("stfs01", "docs")
    )
    snapshot, _ = eb.read(resources, "stfs01")
    assert sorted((s.name, s.enabled_protocols) for s in snapshot.file_shares) == [
        ("docs", "SMB"),
        ("share1235", "NFS"),
    ]


def test_static_website_and_backup_details() -> None:
    resources = eb.merge(
        perimeter_account("stbk01"),
        eb.blob_service("stbk01", static_website=True),
        eb.backup_instance("stbk01", "pol-vault", "bi-1"),
        eb.backup_policy("pol-vault", "VaultStore"),
    )
    snapshot, _ = eb.read(resources, "stbk01")
    assert snapshot.static_website_enabled is True
    (instance,) = snapshot.backup_instances
    assert instance.instance_id.endswith("/backupVaults/bv-tests/backupInstances/bi-1")
    assert instance.datasource_type == "Microsoft.Storage/storageAccounts/blobServices"
    assert instance.policy_id == eb.backup_policy_id("pol-vault")
    assert instance.protection_state == "ProtectionConfigured"
    assert instance.datastore_types == ("VaultStore",) and instance.is_vaulted


def test_backup_instances_of_other_datasource_types_are_ignored() -> None:
    resources = eb.merge(perimeter_account("stbk02"), eb.backup_instance("stbk02", "pol", "bi-disk"))
    (body,) = [b for k, b in resources.items() if k.endswith("/bi-disk")]
    body["properties"]["dataSourceInfo"]["datasourceType"] = "Microsoft.Compute/disks"
    snapshot, clients = eb.read(resources, "stbk02")
    assert snapshot.backup_instances == ()
    assert not [r for r in eb.requests_of(clients) if "backupPolicies" in r]


# -- request accounting -----------------------------------------------------------------------------


def test_account_outside_any_perimeter_costs_two_requests() -> None:
    snapshot, clients = eb.read(eb.outsider("stout01", isSftpEnabled=True), "stout01")
    assert not snapshot.in_perimeter and snapshot.is_sftp_enabled
    assert eb.requests_of(clients) == sorted(
        [path("stout01"), path("stout01", "/networkSecurityPerimeterConfigurations")]
    )


def test_account_in_a_perimeter_costs_the_documented_requests() -> None:
    _, clients = eb.read(perimeter_account("stin01"), "stin01")
    assert eb.requests_of(clients) == in_perimeter_requests("stin01")
    assert len(clients.log.requests) == 9


def test_cmk_account_also_lists_the_perimeter_associations() -> None:
    _, clients = eb.read(eb.merge(perimeter_account("stcmk01", "cmk"), eb.perimeter("stcmk01")), "stcmk01")
    associations = f"GET {NSP_ID}/resourceAssociations"
    assert eb.requests_of(clients) == sorted([*in_perimeter_requests("stcmk01"), associations])


def test_backup_policies_are_read_once_each() -> None:
    resources = eb.merge(
        perimeter_account("stbk03"),
        eb.backup_instance("stbk03", "pol-a", "bi-1"),
        eb.backup_instance("stbk03", "pol-a", "bi-2"),
        eb.backup_instance("stbk03", "pol-b", "bi-3"),
        eb.backup_policy("pol-a", "VaultStore"),
        eb.backup_policy("pol-b", "OperationalStore"),
    )
    snapshot, clients = eb.read(resources, "stbk03")
    assert len(snapshot.backup_instances) == 3
    policy_reads = [r for r in eb.requests_of(clients) if "/backupPolicies/" in r]
    assert policy_reads == [f"GET {eb.backup_policy_id('pol-a')}", f"GET {eb.backup_policy_id('pol-b')}"]
    assert len(clients.log.requests) == 9 + 2


def _in_partner_subscription(resources: dict[str, Any]) -> dict[str, Any]:
    return renamed(resources, {SUB: PARTNER_SUB})


def test_vm_list_is_read_once_per_subscription_across_accounts() -> None:
    names = ["stvm01", "stvm02", "stvm03"]
    resources = eb.merge(
        *(perimeter_account(n) for n in names),
        eb.legacy_vm("stvm02"),
        _in_partner_subscription(eb.merge(perimeter_account("stvm04"), eb.legacy_vm("stvm04", "vm-partner"))),
    )
    clients = EstateClients(Estate(resources))
    partner_account = account_id("stvm04").replace(SUB, PARTNER_SUB)
    snapshots = eb.read_with(clients, *names, partner_account)
    runtime.run(clients.close())
    assert [len(s.unmanaged_disks) for s in snapshots] == [0, 3, 0, 3]
    counts = clients.log.counts()
    assert counts[f"GET /subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"] == 1
    assert counts[f"GET /subscriptions/{PARTNER_SUB}/providers/Microsoft.Compute/virtualMachines"] == 1
    assert sum(counts.values()) == 4 * 9 - 2  # every account's reads, the VM list once per subscription


def test_concurrent_reads_share_one_vm_list_and_one_member_list() -> None:
    names = ["stcc01", "stcc02", "stcc03"]
    resources = eb.merge(*(perimeter_account(n, "cmk") for n in names), eb.perimeter(*names))
    clients = EstateClients(Estate(resources))
    reader = ArmReader(clients)

    async def together() -> list[Any]:
        return list(await asyncio.gather(*(reader.read_account(account_id(n)) for n in names)))

    snapshots = runtime.run(together())
    runtime.run(clients.close())
    assert all(s.perimeters[0].perimeter_members is not None for s in snapshots)
    counts = clients.log.counts()
    assert counts[f"GET /subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"] == 1
    assert sum(v for k, v in counts.items() if k.endswith("/resourceAssociations")) == 1


def test_forgetting_cached_lookups_reads_the_vm_list_again() -> None:
    clients = EstateClients(Estate(perimeter_account("stfg01")))
    reader = ArmReader(clients)
    runtime.run(reader.read_account(account_id("stfg01")))
    reader.forget_cached_lookups()
    runtime.run(reader.read_account(account_id("stfg01")))
    runtime.run(clients.close())
    assert clients.log.counts()[f"GET /subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"] == 2


def test_paged_collections_are_followed() -> None:
    resources = eb.merge(perimeter_account(OR_NAME), eb.replication_policies(OR_NAME))
    snapshot, clients = eb.read(Estate(resources, page_size=1), OR_NAME)
    assert len(snapshot.object_replication_policies) == 2
    # nextLink paths come back lower-cased from the estate: ARM paths compare case-insensitively.
    assert count(clients, path(OR_NAME, "/objectReplicationPolicies")) == 2


# -- failures ---------------------------------------------------------------------------------------


def test_a_404_on_a_child_means_not_configured() -> None:
    estate = Estate(perimeter_account("st404"))
    for suffix in ("/managementPolicies/default", "/blobServices/default"):
        assert estate.answer("GET", f"https://management.azure.com{account_id('st404')}{suffix}").status == 404
    snapshot, _ = eb.read(estate, "st404")
    assert snapshot.incomplete == ()
    assert snapshot.lifecycle_rules == () and snapshot.static_website_enabled is False


FAILING_PARTS = [
    ("/objectReplicationPolicies", "objectReplicationPolicies"),
    ("/managementPolicies/default", "managementPolicies"),
    ("/inventoryPolicies", "inventoryPolicies"),
    ("/blobServices/default", "blobServices"),
    ("/fileServices/default/shares", "fileShares"),
    ("/providers/Microsoft.DataProtection/backupInstances", "backupInstances"),
    ("/providers/Microsoft.Compute/virtualMachines", "virtualMachines"),
    ("/resourceAssociations", "perimeterMembers"),
    ("/backupPolicies/pol", "backupPolicies"),
]


@pytest.mark.parametrize("status", [500, 403])
@pytest.mark.parametrize(("suffix", "part"), FAILING_PARTS, ids=[p for _, p in FAILING_PARTS])
def test_a_failing_child_read_is_recorded_as_incomplete(suffix: str, part: str, status: int) -> None:
    resources = eb.merge(
        perimeter_account("stfail01", "cmk", isSftpEnabled=True),
        eb.perimeter("stfail01"),
        eb.lifecycle_policy("stfail01"),
        eb.backup_instance("stfail01", "pol", "bi-1"),
        eb.backup_policy("pol", "VaultStore"),
    )
    snapshot, clients = eb.read(FailingEstate(resources, suffix, status), "stfail01")
    assert snapshot.incomplete == (part,)
    assert clients.log.counts()[next(r for r in clients.log.counts() if r.lower().endswith(suffix.lower()))] == 1
    # The other parts were still read, and the rules still run on them.
    assert snapshot.is_sftp_enabled
    if part != "managementPolicies":
        assert snapshot.lifecycle_rules == (LifecycleRule("olcmtest", True, "Lifecycle"),)
    rules = {f.rule_id for f in evaluate(snapshot, RulesConfig(), TODAY).findings}
    assert "sftp-enabled" in rules


def test_failing_configuration_list_is_incomplete_and_reads_nothing_else() -> None:
    resources = perimeter_account("stfail02", isSftpEnabled=True)
    snapshot, clients = eb.read(FailingEstate(resources, "/networkSecurityPerimeterConfigurations", 500), "stfail02")
    assert snapshot.incomplete == ("networkSecurityPerimeterConfigurations",)
    assert snapshot.perimeters == ()
    assert len(clients.log.requests) == 2


def test_a_failed_vm_list_is_not_cached() -> None:
    resources = eb.merge(perimeter_account("stvmf01"), perimeter_account("stvmf02"), eb.legacy_vm("stvmf02"))
    estate = FailingEstate(resources, "/providers/Microsoft.Compute/virtualMachines", 503, times=1)
    clients = EstateClients(estate)
    first, second = eb.read_with(clients, "stvmf01", "stvmf02")
    runtime.run(clients.close())
    assert first.incomplete == ("virtualMachines",)
    assert second.incomplete == () and len(second.unmanaged_disks) == 3
    assert clients.log.counts()[f"GET /subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"] == 2


def test_account_404_raises_account_not_found() -> None:
    with pytest.raises(AccountNotFound) as caught:
        eb.read(perimeter_account("stthere01"), "stgone01")
    assert str(caught.value) == account_id("stgone01")


def test_account_500_raises_the_sdk_error() -> None:
    with pytest.raises(HttpResponseError) as caught:
        eb.read(FailingEstate(perimeter_account("stboom01"), "/storageAccounts/stboom01", 500), "stboom01")
    assert not isinstance(caught.value, AccountNotFound)
    assert caught.value.status_code == 500


def test_not_a_storage_account_id() -> None:
    clients = EstateClients(Estate({}))
    with pytest.raises(ValueError, match="not a storage account id"):
        runtime.run(ArmReader(clients).read_account(eb.vault_id("kv1")))


def test_list_account_ids_pages_through_a_subscription() -> None:
    names = [f"stlist{i:02}" for i in range(5)]
    resources = eb.merge(*(eb.outsider(n) for n in names), _in_partner_subscription(eb.outsider("stlist99")))
    clients = EstateClients(Estate(resources, page_size=2))
    ids = runtime.run(ArmReader(clients).list_account_ids(SUB))
    runtime.run(clients.close())
    assert sorted(ids) == sorted(account_id(n) for n in names)
    assert count(clients, f"GET /subscriptions/{SUB}/providers/Microsoft.Storage/storageAccounts") == 3


def test_the_raw_vm_list_asks_what_the_compute_sdk_asks() -> None:
    """The VM list is read raw (no Compute SDK import on an account read): the same path and
    api-version as azure-mgmt-compute's own request."""
    from azure.mgmt.compute.operations._operations import build_virtual_machines_list_all_request

    from shared.adapters.arm_reader import COMPUTE_API_VERSION

    request = build_virtual_machines_list_all_request(SUB)
    query = dict(part.split("=", 1) for part in urlsplit(request.url).query.split("&"))
    assert query == {"api-version": COMPUTE_API_VERSION}
    snapshot, clients = eb.read(eb.merge(perimeter_account("stvhd01"), eb.legacy_vm("stvhd01")), "stvhd01")
    assert len(snapshot.unmanaged_disks) == 3
    vm_reads = [path for _, path in clients.log.requests if path.lower().endswith("/virtualmachines")]
    assert vm_reads == [urlsplit(request.url).path]


def test_an_account_read_does_not_import_the_compute_or_data_protection_sdk() -> None:
    """The Compute SDK's models were about a third of a cold start's imports, Data Protection's a
    tenth; an account read (VHD VMs and backup instances included) needs neither."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tests import estate_builder as eb\n"
        "from tests.test_reader import perimeter_account\n"
        "resources = eb.merge(perimeter_account('stvhd01'), eb.legacy_vm('stvhd01'),\n"
        "    eb.backup_instance('stvhd01', 'pol-vault', 'bi-1'), eb.backup_policy('pol-vault', 'VaultStore'))\n"
        "snapshot, _ = eb.read(resources, 'stvhd01')\n"
        "assert len(snapshot.unmanaged_disks) == 3, snapshot.unmanaged_disks\n"
        "assert [b.datastore_types for b in snapshot.backup_instances] == [('VaultStore',)], snapshot\n"
        "print(sorted(m for m in sys.modules if m.startswith(('azure.mgmt.compute', 'azure.mgmt.dataprotection'))))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


def test_the_raw_backup_reads_ask_what_the_data_protection_sdk_asks() -> None:
    """Backup instances (extension routing and a vault's list), the subscription's vaults and a
    policy are read raw (no Data Protection SDK import on an account read): the SDK's own paths
    and api-version."""
    from azure.mgmt.dataprotection.operations import _operations as ops

    from shared.adapters.arm_reader import DATAPROTECTION_API_VERSION, _dataprotection_request

    account = eb.account_id("stbkp01")
    vault = f"/subscriptions/{SUB}/resourceGroups/rg-backup/providers/Microsoft.DataProtection/backupVaults/bv"
    pairs = [
        (
            ops.build_backup_instances_extension_routing_list_request(account),
            _dataprotection_request(account, "providers", "Microsoft.DataProtection", "backupInstances"),
        ),
        (
            ops.build_backup_vaults_get_in_subscription_request(SUB),
            _dataprotection_request("/subscriptions", SUB, "providers", "Microsoft.DataProtection", "backupVaults"),
        ),
        (
            ops.build_backup_instances_list_request("rg-backup", "bv", SUB),
            _dataprotection_request(vault, "backupInstances"),
        ),
        (
            ops.build_backup_policies_get_request("rg-backup", "bv", "policy-1", SUB),
            _dataprotection_request(f"{vault}/backupPolicies/policy-1"),
        ),
    ]
    for sdk, raw in pairs:
        assert "/" + sdk.url.split("?", 1)[0].lstrip("/") == urlsplit(raw.url).path  # the SDK's own "//" too
        assert dict(p.split("=", 1) for p in urlsplit(sdk.url).query.split("&")) == {
            "api-version": DATAPROTECTION_API_VERSION
        }
    # Ids come from ARM data: a segment cannot smuggle in a query or another host.
    odd = _dataprotection_request("//evil.example/x?y=1#z")
    assert urlsplit(odd.url).path == "/evil.example/x%3Fy%3D1%23z" and not urlsplit(odd.url).netloc
