"""Small estates for the rule and reader tests, built from the official Azure REST API examples.

Every body starts from an official example (vendored in ``tests/corpus``,
through ``tests/sample_estate.py``'s ``example``, ``renamed``, ``storage_account``,
``nsp_configuration`` and ``child``) and only changes the properties a test is about.

``read()`` drives the real reader: ``ArmReader(EstateClients(Estate(...)))`` on the shared loop, so
the azure-mgmt-* clients build the URLs, page and deserialise exactly as against ARM.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from shared.adapters import runtime
from shared.adapters.arm_reader import ArmReader
from shared.adapters.estate import Estate
from shared.core.model import StorageAccountSnapshot
from shared.wiring import EstateClients
from tests.sample_estate import (
    RG_APPS,
    RG_BACKUP,
    RG_SEC,
    SUB,
    account_id,
    child,
    example,
    network_side,
    nsp_configuration,
    renamed,
    storage_account,
)

STRICT = "profile-strict"  # narrow rules: 10.x prefixes inbound, FQDNs outbound
LEGACY = "profile-legacy"  # 148.0.0.0/8, a subscription rule and a service-tag rule
VERSIONS = {STRICT: 3, LEGACY: 10}
EXAMPLE_VAULT = "myvault8569"  # the vault of StorageAccountGetPropertiesCMKEnabled.json
BACKUP_VAULT = "bv-tests"

Resources = dict[str, Any]


def member(
    name: str,
    base: str = "general",
    *,
    mode: str = "Enforced",
    profile: str = STRICT,
    issues: bool = False,
    **properties: Any,
) -> Resources:
    """A storage account associated with the sample perimeter, plus its NSP configuration."""
    rid, body = storage_account(name, base, **properties)
    cid, config = nsp_configuration(name, f"assoc-{name}", profile, mode, VERSIONS[profile], issues=issues)
    return {rid: body, cid: config}


def outsider(name: str, base: str = "general", **properties: Any) -> Resources:
    """A storage account that no perimeter knows about (its configuration list is empty)."""
    rid, body = storage_account(name, base, **properties)
    return {rid: body}


def perimeter(*members: str, vaults: Iterable[str] = ()) -> Resources:
    """The perimeter, its profiles and rules, and resource associations for accounts and vaults."""
    associations = {f"assoc-{name}": (account_id(name), STRICT) for name in members}
    for vault in vaults:
        associations[f"assoc-kv-{vault}"] = (vault_id(vault), STRICT)
    return network_side(associations, VERSIONS)


def vault_id(vault: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{RG_SEC}/providers/Microsoft.KeyVault/vaults/{vault}"


# -- children built on official examples ----------------------------------------------------------


def nfs_share(account: str, share: str = "share-nfs") -> Resources:
    rid, body = child(
        account,
        f"fileServices/default/shares/{share}",
        example("storage-2025-08-01/FileSharesPut_NFS.json"),
        {"share1235": share},
    )
    return {rid: body}


def smb_share(account: str, share: str = "share-smb") -> Resources:
    """FileSharesPut_NFS.json without ``enabledProtocols``: ARM omits it for SMB shares."""
    rid, body = child(
        account,
        f"fileServices/default/shares/{share}",
        example("storage-2025-08-01/FileSharesPut_NFS.json"),
        {"share1235": share},
    )
    body["properties"].pop("enabledProtocols")
    return {rid: body}


def replication_policies(account: str) -> Resources:
    out: Resources = {}
    for policy in example("storage-2025-08-01/StorageAccountListObjectReplicationPolicies.json")["value"]:
        suffix = f"objectReplicationPolicies/{policy['name']}"
        rid, body = child(account, suffix, policy, {"sto2527": account})
        out[rid] = body
    return out


def lifecycle_policy(account: str, enabled: bool = True) -> Resources:
    body = example("storage-2025-08-01/StorageAccountGetManagementPolicy.json")
    rid, body = child(account, "managementPolicies/default", body)
    body["properties"]["policy"]["rules"][0]["enabled"] = enabled
    return {rid: body}


def inventory_policy(account: str, policy_enabled: bool = True, rule_enabled: bool = True) -> Resources:
    body = example("storage-2025-08-01/StorageAccountGetBlobInventoryPolicy.json")
    rid, body = child(account, "inventoryPolicies/default", body)
    body["properties"]["policy"]["enabled"] = policy_enabled
    body["properties"]["policy"]["rules"][0]["enabled"] = rule_enabled
    return {rid: body}


def blob_service(account: str, static_website: bool) -> Resources:
    """BlobServicesGet.json with the staticWebsite property set."""
    rid, body = child(account, "blobServices/default", example("storage-2025-08-01/BlobServicesGet.json"))
    body["properties"]["staticWebsite"] = {
        "enabled": static_website,
        "indexDocument": "index.html",
        "errorDocument404Path": "404.html",
    }
    return {rid: body}


def legacy_vm(account: str, vm_name: str = "vm-legacy-app") -> Resources:
    """The official VM example with unmanaged OS and data disks, its VHDs in ``account``."""
    vm = renamed(
        example("compute-2025-04-01/VirtualMachine_Create_PlatformImageVmWithUnmanagedOsAndDataDisks.json"),
        {"{subscription-id}": SUB, "myResourceGroup": RG_APPS, "{existing-storage-account-name}": account},
    )
    vm["name"] = vm_name
    vm_type = "Microsoft.Compute/virtualMachines"
    vm["id"] = f"/subscriptions/{SUB}/resourceGroups/{RG_APPS}/providers/{vm_type}/{vm_name}"
    vm["properties"]["provisioningState"] = "Succeeded"
    return {vm["id"]: vm}


def backup_policy_id(policy: str) -> str:
    return f"{_vault()}/backupPolicies/{policy}"


def _vault() -> str:
    group = f"/subscriptions/{SUB}/resourceGroups/{RG_BACKUP}"
    return f"{group}/providers/Microsoft.DataProtection/backupVaults/{BACKUP_VAULT}"


def backup_instance(account: str, policy: str, instance: str | None = None) -> Resources:
    """ListBackupInstancesExtensionRouting.json's instance, protecting the account's blobs."""
    body = example("dataprotection-2025-07-01/ListBackupInstancesExtensionRouting.json")["value"][0]
    name = instance or f"{account}-{account}-7664c12f-4d0a-440f-a0dc-b64f708b10e3"
    body["id"], body["name"] = f"{_vault()}/backupInstances/{name}", name
    props = body["properties"]
    props["friendlyName"] = account
    for info in (props["dataSourceInfo"], props["dataSourceSetInfo"]):
        info.update(
            resourceID=account_id(account),
            resourceUri=account_id(account),
            resourceName=account,
            datasourceType="Microsoft.Storage/storageAccounts/blobServices",
            resourceType="Microsoft.Storage/storageAccounts",
            resourceLocation="eastus",
        )
    props["policyInfo"]["policyId"] = backup_policy_id(policy)
    return {body["id"]: body}


def backup_policy(policy: str, store: str) -> Resources:
    """GetBackupPolicy.json (its rules all use VaultStore) with ``store`` as the data store."""
    body = renamed(example("dataprotection-2025-07-01/GetBackupPolicy.json"), {'"VaultStore"': f'"{store}"'})
    body["id"], body["name"] = backup_policy_id(policy), policy
    body["properties"]["datasourceTypes"] = ["Microsoft.Storage/storageAccounts/blobServices"]
    return {body["id"]: body}


def merge(*parts: Mapping[str, Any]) -> Resources:
    out: Resources = {}
    for part in parts:
        out.update(copy.deepcopy(dict(part)))
    return out


# -- reading -------------------------------------------------------------------------------------


def read_with(clients: EstateClients, *names_or_ids: str) -> list[StorageAccountSnapshot]:
    """Read accounts sequentially with one reader (so its per-subscription caches are shared)."""
    reader = ArmReader(clients)

    async def go() -> list[StorageAccountSnapshot]:
        out = []
        for item in names_or_ids:
            out.append(await reader.read_account(item if item.startswith("/") else account_id(item)))
        return out

    return runtime.run(go(), timeout=60)


def read(resources: Mapping[str, Any] | Estate, name: str) -> tuple[StorageAccountSnapshot, EstateClients]:
    """Read one account with a fresh reader; the clients are returned for their request log."""
    estate = resources if isinstance(resources, Estate) else Estate(resources)
    clients = EstateClients(estate)
    try:
        (snapshot,) = read_with(clients, name)
    finally:
        runtime.run(clients.close(), timeout=30)
    return snapshot, clients


def requests_of(clients: EstateClients) -> list[str]:
    """The request log as sorted "METHOD path" lines (query strings are not recorded)."""
    return sorted(f"{m} {p}" for m, p in clients.log.requests)
