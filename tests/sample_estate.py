"""Builds the bundled sample estates from the official Azure REST API examples.

Every response body comes from an official example vendored byte for byte in ``tests/corpus``
(source repository, path and commit of each in its MANIFEST.tsv); the builder only renames
(placeholders such as ``{subscription-id}`` become the sample tenant's ids) and sets the
properties a scenario is about. Run ``python -m tests.sample_estate`` to regenerate
``shared/samples/*.json``; ``tests/test_standalone.py`` fails when the committed files drift
from what this builder produces.

The sample tenant "Contoso": one perimeter ``nsp-contoso-data`` with two profiles
(``profile-strict``: narrow rules; ``profile-legacy``: a /8 prefix, a subscription rule and a
service-tag rule), accounts that trigger every rule, clean accounts, and one account outside any
perimeter. ``estate-changed.json`` is the same tenant after a day of drift (see ``changed()``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
OUT = ROOT / "shared" / "samples"

SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
PARTNER_SUB = "0f9e8d7c-6b5a-4f3e-8d2c-1b0a9f8e7d6c"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
RG_NET, RG_DATA, RG_SEC, RG_APPS, RG_BACKUP = "rg-network", "rg-data", "rg-security", "rg-apps", "rg-backup"
NSP_NAME = "nsp-contoso-data"
NSP_GUID = "ce2d5953-5c15-40ca-9d51-cc3f4a63b0f5"
NSP_ID = (
    f"/subscriptions/{SUB}/resourceGroups/{RG_NET}/providers/Microsoft.Network/networkSecurityPerimeters/{NSP_NAME}"
)
LOCATION = "eastus"
CMK_VAULT_IN = "kv-contoso-cmk"
CMK_VAULT_OUT = "myvault8569"  # the official CMK example's vault, left outside the perimeter
VAULT_IN_ID = f"/subscriptions/{SUB}/resourceGroups/{RG_SEC}/providers/Microsoft.KeyVault/vaults/{CMK_VAULT_IN}"
BACKUP_VAULT = "bv-contoso"


def example(relative: str, status: str = "200") -> Any:
    """The response body of an official example in tests/corpus."""
    path = CORPUS / relative
    if not path.exists():
        raise FileNotFoundError(f"official example {relative} not found under {CORPUS}")
    return copy.deepcopy(json.loads(path.read_text(encoding="utf-8"))["responses"][status]["body"])


def renamed(body: Any, mapping: dict[str, str]) -> Any:
    """Replace placeholder and sample names everywhere in a body (string-wise, longest first)."""
    text = json.dumps(body)
    for old in sorted(mapping, key=len, reverse=True):
        text = text.replace(old, mapping[old])
    return json.loads(text)


def account_id(name: str, rg: str = RG_DATA) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"


# -- network side -------------------------------------------------------------------------------


def _access_rule(profile: str, name: str, source: str, **properties: Any) -> tuple[str, Any]:
    body = example(source)
    body = renamed(
        body,
        {
            "subId": SUB,
            "/subscriptions/rg1/": f"/subscriptions/{SUB}/",
            "rg1": RG_NET,
            "nsp1": NSP_NAME,
            "profile1": profile,
        },
    )
    body["name"] = name
    body["id"] = f"{NSP_ID}/profiles/{profile}/accessRules/{name}"
    body["properties"].update(properties)
    return body["id"], body


PROFILE_RULES: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    # (rule name, official example it is built on, properties the scenario sets)
    "profile-strict": [
        ("allow-corp-egress", "nsp-network-2025-05-01/NspAccessRulePut.json", {}),
        ("allow-partner-fqdns", "nsp-network-2025-07-01/NspAccessRuleGet.json", {}),
    ],
    "profile-legacy": [
        # The prefixes of the official storage NSP configuration example: 148.0.0.0/8 is a /8.
        (
            "inVpnRule",
            "nsp-network-2025-05-01/NspAccessRulePut.json",
            {"addressPrefixes": ["148.0.0.0/8", "152.4.6.0/24"]},
        ),
        (
            "allowedSubscriptions",
            "nsp-network-2025-05-01/NspAccessRulePut.json",
            {"addressPrefixes": [], "subscriptions": [{"id": f"/subscriptions/{PARTNER_SUB}"}]},
        ),
        (
            "allow-adf-tag",
            "nsp-network-2025-05-01/NspAccessRulePut.json",
            {"addressPrefixes": [], "serviceTags": ["DataFactory"]},
        ),
    ],
}


def rules_of(profile: str) -> list[tuple[str, str, dict[str, Any]]]:
    return PROFILE_RULES_CHANGED.get(profile, PROFILE_RULES[profile])


def network_side(associations: dict[str, tuple[str, str]], versions: dict[str, int]) -> dict[str, Any]:
    """The perimeter, its profiles, rules and resource associations (name -> (resource id, profile))."""
    estate: dict[str, Any] = {}
    perimeter = renamed(
        example("nsp-network-2025-07-01/NetworkSecurityPerimeterGet.json"),
        {"subId": SUB, "rg1": RG_NET, "nsp1": NSP_NAME},
    )
    perimeter["location"] = LOCATION
    perimeter["properties"]["perimeterGuid"] = NSP_GUID
    estate[perimeter["id"]] = perimeter
    for profile in PROFILE_RULES:
        rules = rules_of(profile)
        body = renamed(
            example("nsp-network-2025-05-01/NspProfileGet.json"),
            {"subId": SUB, "rg1": RG_NET, "nsp1": NSP_NAME, "profile1": profile},
        )
        body["name"] = profile
        body["properties"]["accessRulesVersion"] = str(versions[profile])
        estate[body["id"]] = body
        for name, source, props in rules:
            rid, rule = _access_rule(profile, name, source, **props)
            estate[rid] = rule
    template = example("nsp-network-2026-03-01/NspAssociationGet.json")
    for name, (resource, profile) in associations.items():
        body = renamed(
            template,
            {
                "00000000-0000-0000-0000-000000000000": SUB,
                "rg1": RG_NET,
                "nsp1": NSP_NAME,
                "association1": name,
                "{profileName}": profile,
            },
        )
        body["properties"]["privateLinkResource"]["id"] = resource
        estate[body["id"]] = body
    return estate


def effective_rules(profile: str) -> list[dict[str, Any]]:
    """The profile's rules as the storage NSP configuration repeats them (name + properties)."""
    out = []
    for name, source, props in rules_of(profile):
        _, rule = _access_rule(profile, name, source, **props)
        keep = {
            k: v
            for k, v in rule["properties"].items()
            if k
            in {
                "direction",
                "addressPrefixes",
                "subscriptions",
                "fullyQualifiedDomainNames",
                "serviceTags",
                "networkSecurityPerimeters",
            }
            and v
        }
        out.append({"name": name, "properties": keep})
    return out


def nsp_configuration(
    account: str, association: str, profile: str, mode: str, version: int, issues: bool = False
) -> tuple[str, Any]:
    if issues:  # the 2025-06-01 GET example is the one that carries a provisioning issue
        body = example("storage-2025-06-01/NetworkSecurityPerimeterConfigurationGet.json")
    else:
        body = example("storage-2025-08-01/NetworkSecurityPerimeterConfigurationList.json")["value"][0]
    body = renamed(body, {"00000000-1111-2222-3333-444444444444": SUB, "res4410": RG_DATA, "sto8607": account})
    name = f"{NSP_GUID}.{association}"
    body["name"] = name
    body["id"] = f"{account_id(account)}/networkSecurityPerimeterConfigurations/{name}"
    props = body["properties"]
    props["networkSecurityPerimeter"] = {"id": NSP_ID, "perimeterGuid": NSP_GUID, "location": LOCATION}
    props["resourceAssociation"] = {"name": association, "accessMode": mode}
    props["profile"]["name"] = profile
    props["profile"]["accessRulesVersion"] = version
    props["profile"]["accessRules"] = effective_rules(profile)
    return body["id"], body


# -- storage side -------------------------------------------------------------------------------

BASES = {
    "general": (
        "storage-2025-08-01/StorageAccountGetProperties.json",
        {"{subscription-id}": SUB, "res9407": RG_DATA, "sto8596": "{name}"},
    ),
    "cmk": (
        "storage-2025-08-01/StorageAccountGetPropertiesCMKEnabled.json",
        {"{subscription-id}": SUB, "res9407": RG_DATA, "sto8596": "{name}"},
    ),
    "nfs": (
        "storage-2025-08-01/NfsV3AccountCreate.json",
        {"{subscription-id}": SUB, "res9101": RG_DATA, "sto4445": "{name}"},
    ),
}


def storage_account(name: str, base: str, **properties: Any) -> tuple[str, Any]:
    source, mapping = BASES[base]
    body = renamed(example(source), {k: v.replace("{name}", name) for k, v in mapping.items()})
    body["location"] = LOCATION
    body["properties"].update(properties)
    return body["id"], body


def child(account: str, suffix: str, body: Any, mapping: dict[str, str] | None = None) -> tuple[str, Any]:
    body = renamed(body, {"{subscription-id}": SUB, **(mapping or {})})
    body["id"] = f"{account_id(account)}/{suffix}"
    return body["id"], body


# -- the tenant ---------------------------------------------------------------------------------


def build(changed: bool = False) -> dict[str, Any]:
    """The sample estate (``changed``: after the day of drift). Leaves no changed rules behind for
    ``network_side`` callers (``tests/estate_builder.py``) that run after it in the same process."""
    PROFILE_RULES_CHANGED.clear()
    try:
        return _build(changed)
    finally:
        PROFILE_RULES_CHANGED.clear()


def _build(changed: bool) -> dict[str, Any]:
    estate: dict[str, Any] = {
        "$comment": "Generated by tests/sample_estate.py from official Azure REST API examples; do not edit by hand.",
    }
    versions = {"profile-strict": 3, "profile-legacy": 10}
    members: dict[str, tuple[str, str, str]] = {
        # account -> (association name, profile, access mode)
        "stcontosoclean01": ("assoc-clean01", "profile-strict", "Enforced"),
        "stcontosoclean02": ("assoc-clean02", "profile-strict", "Enforced"),
        "stcontososftp01": ("assoc-sftp01", "profile-strict", "Enforced"),
        "stcontosonfs01": ("assoc-nfs01", "profile-strict", "Enforced"),
        "stcontosofiles01": ("assoc-files01", "profile-strict", "Enforced"),
        "stcontosorepl01": ("assoc-repl01", "profile-strict", "Enforced"),
        "stcontosoweb01": ("assoc-web01", "profile-strict", "Enforced"),
        "stcontosovhd01": ("assoc-vhd01", "profile-strict", "Enforced"),
        "stcontosobkp01": ("assoc-bkp01", "profile-strict", "Enforced"),
        "stcontosobkp02": ("assoc-bkp02", "profile-strict", "Enforced"),
        "stcontosocmk01": ("assoc-cmk01", "profile-strict", "Enforced"),
        "stcontosolearn01": ("assoc-learn01", "profile-strict", "Learning"),
        "stcontosoaudit01": ("assoc-audit01", "profile-strict", "Audit"),
        "stcontosolegacy01": ("assoc-legacy01", "profile-legacy", "Enforced"),
    }
    if changed:
        changed_state(members, versions)

    associations = {assoc: (account_id(acct), profile) for acct, (assoc, profile, _) in members.items()}
    associations["assoc-kv-cmk"] = (VAULT_IN_ID, "profile-strict")
    estate.update(network_side(associations, versions))

    for acct, (assoc, profile, mode) in members.items():
        rid, body = nsp_configuration(acct, assoc, profile, mode, versions[profile], issues=acct == "stcontosolearn01")
        estate[rid] = body

    def put(pair: tuple[str, Any]) -> None:
        estate[pair[0]] = pair[1]

    secured = {"publicNetworkAccess": "SecuredByPerimeter"}
    put(storage_account("stcontosoclean01", "general", **secured))
    put(storage_account("stcontosoclean02", "cmk", **secured))
    estate[account_id("stcontosoclean02")]["properties"]["encryption"]["keyvaultproperties"]["keyvaulturi"] = (
        f"https://{CMK_VAULT_IN}.vault.azure.net"
    )
    put(storage_account("stcontososftp01", "general", isSftpEnabled=True, isLocalUserEnabled=True, **secured))
    put(storage_account("stcontosonfs01", "nfs", **secured))
    put(storage_account("stcontosofiles01", "general", **secured))
    put(
        child(
            "stcontosofiles01",
            "fileServices/default/shares/share-nfs",
            example("storage-2025-08-01/FileSharesPut_NFS.json"),
            {"share1235": "share-nfs"},
        )
    )
    put(storage_account("stcontosorepl01", "general", **secured))
    for policy in example("storage-2025-08-01/StorageAccountListObjectReplicationPolicies.json")["value"]:
        put(
            child(
                "stcontosorepl01",
                f"objectReplicationPolicies/{policy['name']}",
                policy,
                {"sto2527": "stcontosorepl01"},
            )
        )
    put(
        child(
            "stcontosorepl01",
            "managementPolicies/default",
            example("storage-2025-08-01/StorageAccountGetManagementPolicy.json"),
        )
    )
    put(
        child(
            "stcontosorepl01",
            "inventoryPolicies/default",
            example("storage-2025-08-01/StorageAccountGetBlobInventoryPolicy.json"),
        )
    )
    put(storage_account("stcontosoweb01", "general", **secured))
    put(storage_account("stcontosovhd01", "general", **secured))
    vm = renamed(
        example("compute-2025-04-01/VirtualMachine_Create_PlatformImageVmWithUnmanagedOsAndDataDisks.json"),
        {
            "{subscription-id}": SUB,
            "myResourceGroup": RG_APPS,
            "{existing-storage-account-name}": "stcontosovhd01",
        },
    )
    vm["name"] = "vm-legacy-app"
    vm["id"] = (
        f"/subscriptions/{SUB}/resourceGroups/{RG_APPS}/providers/Microsoft.Compute/virtualMachines/vm-legacy-app"
    )
    vm["location"] = LOCATION
    vm["properties"]["provisioningState"] = "Succeeded"
    estate[vm["id"]] = vm
    put(storage_account("stcontosobkp01", "general", **secured))
    put(storage_account("stcontosobkp02", "general", **secured))
    put(storage_account("stcontosocmk01", "cmk", **secured))
    put(storage_account("stcontosolearn01", "general", publicNetworkAccess="Enabled"))
    put(storage_account("stcontosoaudit01", "general", publicNetworkAccess="Enabled"))
    put(storage_account("stcontosolegacy01", "general", **secured))
    put(storage_account("stcontosooutside01", "general", publicNetworkAccess="Enabled"))

    extras(estate, put)
    if changed:
        changed_estate(estate, put)
    return estate


def extras(estate: dict[str, Any], put: Any) -> None:
    """Static website, an SMB share and Azure Backup (examples in tests/corpus)."""
    web = child("stcontosoweb01", "blobServices/default", example("storage-2025-08-01/BlobServicesGet.json"))
    web[1]["properties"]["staticWebsite"] = {
        "enabled": True,
        "indexDocument": "index.html",
        "errorDocument404Path": "404.html",
    }
    put(web)
    smb = child(
        "stcontosofiles01",
        "fileServices/default/shares/share-smb",
        example("storage-2025-08-01/FileSharesPut_NFS.json"),
        {"share1235": "share-smb"},
    )
    smb[1]["properties"]["enabledProtocols"] = "SMB"
    put(smb)
    vault = f"/subscriptions/{SUB}/resourceGroups/{RG_BACKUP}/providers/Microsoft.DataProtection"
    vault += f"/backupVaults/{BACKUP_VAULT}"
    vault_body = example("dataprotection-2025-07-01/GetBackupVault.json")
    vault_body["id"], vault_body["name"] = vault, BACKUP_VAULT
    vault_body["type"], vault_body["location"] = "Microsoft.DataProtection/backupVaults", LOCATION
    estate[vault] = vault_body
    for policy_name, store in (("policy-blob-vaulted", "VaultStore"), ("policy-blob-operational", "OperationalStore")):
        policy = example("dataprotection-2025-07-01/GetBackupPolicy.json")
        policy = json.loads(json.dumps(policy).replace('"VaultStore"', f'"{store}"'))
        policy["id"], policy["name"] = f"{vault}/backupPolicies/{policy_name}", policy_name
        policy["properties"]["datasourceTypes"] = ["Microsoft.Storage/storageAccounts/blobServices"]
        estate[policy["id"]] = policy
    for account, policy_name in (
        ("stcontosobkp01", "policy-blob-vaulted"),
        ("stcontosobkp02", "policy-blob-operational"),
    ):
        instance = example("dataprotection-2025-07-01/ListBackupInstancesExtensionRouting.json")["value"][0]
        name = f"{account}-{account}-7664c12f-4d0a-440f-a0dc-b64f708b10e3"
        instance["id"], instance["name"] = f"{vault}/backupInstances/{name}", name
        props = instance["properties"]
        props["friendlyName"] = account
        for info in (props["dataSourceInfo"], props["dataSourceSetInfo"]):
            info.update(
                resourceID=account_id(account),
                resourceUri=account_id(account),
                resourceName=account,
                datasourceType="Microsoft.Storage/storageAccounts/blobServices",
                resourceType="Microsoft.Storage/storageAccounts",
                resourceLocation=LOCATION,
            )
        props["policyInfo"]["policyId"] = f"{vault}/backupPolicies/{policy_name}"
        props["policyInfo"]["policyParameters"]["dataStoreParametersList"][0]["resourceGroupId"] = (
            f"/subscriptions/{SUB}/resourceGroups/{RG_BACKUP}"
        )
        estate[instance["id"]] = instance


def changed_state(members: dict[str, tuple[str, str, str]], versions: dict[str, int]) -> None:
    """Drift on the perimeter side: a mode weakened, a mode fixed, a rule added to a profile."""
    members["stcontosoclean02"] = ("assoc-clean02", "profile-strict", "Learning")  # Enforced -> Learning
    members["stcontosoaudit01"] = ("assoc-audit01", "profile-strict", "Enforced")  # Audit -> Enforced
    versions["profile-legacy"] += 1
    PROFILE_RULES_CHANGED["profile-legacy"] = [
        *PROFILE_RULES["profile-legacy"],
        (
            "allow-anywhere-temp",
            "nsp-network-2025-05-01/NspAccessRulePut.json",
            {"addressPrefixes": ["0.0.0.0/0"]},
        ),
    ]


PROFILE_RULES_CHANGED: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}


def changed_estate(estate: dict[str, Any], put: Any) -> None:
    """Drift on the storage side: SFTP switched on, replication removed, the legacy VM deleted."""
    estate[account_id("stcontosoclean01")]["properties"]["isSftpEnabled"] = True
    for key in [k for k in estate if "/objectreplicationpolicies/" in k.lower() and "stcontosorepl01" in k]:
        del estate[key]
    for key in [k for k in estate if k.lower().endswith("/virtualmachines/vm-legacy-app")]:
        del estate[key]


# -- the replay scenario's events ------------------------------------------------------------------

EG = "eventgrid-Microsoft.Resources/event-grid-schema/"
CE = "eventgrid-Microsoft.Resources/cloud-events-schema/"
ARN = "eventgrid-Microsoft.ResourceNotifications/event-grid-schema/"
ACTORS = {
    "alice": ("Alice Admin", "alice@contoso.com", "203.0.113.10"),
    "bob": ("Bob Builder", "bob@contoso.com", "203.0.113.22"),
    "carol": ("Carol Network", "carol@contoso.com", "198.51.100.7"),
    "dave": ("Dave Ops", "dave@contoso.com", "198.51.100.40"),
}


def sample_event(
    template: str,
    event_id: str,
    resource: str,
    operation: str,
    actor: str,
    when: str,
    correlation: str,
    subscription: str = SUB,
) -> dict[str, Any]:
    """An official sample event, re-pointed at the sample tenant (ids, claims, times)."""
    body = json.loads((CORPUS / template).read_text(encoding="utf-8"))
    name, upn, ip = ACTORS[actor]
    data = body["data"]
    body["id"] = event_id
    body["subject"] = resource
    for key in ("topic", "source"):
        if key in body:
            body[key] = f"/subscriptions/{subscription}"
    for key in ("eventTime", "time"):
        if key in body:
            body[key] = when
    if "resourceInfo" in data:  # Resource Notifications: the body snapshot keeps its own shape
        data["resourceInfo"]["id"] = resource
        data["resourceInfo"]["name"] = resource.rsplit("/", 1)[-1]
        data["operationalInfo"]["resourceEventTime"] = when
        return body
    data["resourceUri"] = resource
    data["operationName"] = operation
    data["subscriptionId"] = subscription
    data["tenantId"] = TENANT
    data["correlationId"] = correlation
    data["authorization"]["scope"] = resource
    data["authorization"]["action"] = operation
    claims = data["claims"]
    claims["name"] = name
    claims["http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"] = upn
    claims["ipaddr"] = ip
    if "httpRequest" in data:  # the samples carry it only for updates and deletes, as Azure does
        data["httpRequest"]["clientIpAddress"] = ip
        data["httpRequest"]["url"] = f"https://management.azure.com{resource}?api-version=2025-08-01"
    data["resourceProvider"] = operation.split("/", 1)[0]
    return body


def events() -> list[dict[str, Any]]:
    clean01 = account_id("stcontosoclean01")
    repl01 = account_id("stcontosorepl01")
    policies = [
        p["name"] for p in example("storage-2025-08-01/StorageAccountListObjectReplicationPolicies.json")["value"]
    ]
    vm = f"/subscriptions/{SUB}/resourceGroups/{RG_APPS}/providers/Microsoft.Compute/virtualMachines/vm-legacy-app"
    rule = f"{NSP_ID}/profiles/profile-legacy/accessRules/allow-anywhere-temp"
    sftp_write = sample_event(
        EG + "resource_write_success.json",
        "5f1d7a3e-0001-4c1a-9a55-000000000001",
        clean01,
        "Microsoft.Storage/storageAccounts/write",
        "alice",
        "2026-11-24T09:15:02Z",
        "corr-sftp-portal-save",
    )
    out = [
        # A portal save on stcontosoclean01: three writes and a Resource Notifications snapshot.
        sftp_write,
        sample_event(
            EG + "resource_write_success.json",
            "5f1d7a3e-0001-4c1a-9a55-000000000002",
            clean01,
            "Microsoft.Storage/storageAccounts/write",
            "alice",
            "2026-11-24T09:15:04Z",
            "corr-sftp-portal-save",
        ),
        sample_event(
            CE + "resource_write_success.json",
            "5f1d7a3e-0001-4c1a-9a55-000000000003",
            f"{clean01}/blobServices/default",
            "Microsoft.Storage/storageAccounts/blobServices/write",
            "alice",
            "2026-11-24T09:15:05Z",
            "corr-sftp-portal-save",
        ),
        sample_event(
            ARN + "Resources_CreatedOrUpdated.json",
            "5f1d7a3e-0001-4c1a-9a55-000000000004",
            clean01,
            "",
            "alice",
            "2026-11-24T09:15:06Z",
            "",
        ),
        # Event Grid delivers at least once: the first write again, same id.
        copy.deepcopy(sftp_write),
        # Bob removes both object replication policies (CloudEvents; one has the `specVersion` quirk).
        *[
            sample_event(
                CE + "resource_delete_success.json",
                f"5f1d7a3e-0002-4c1a-9a55-00000000000{i}",
                f"{repl01}/objectReplicationPolicies/{policy}",
                "Microsoft.Storage/storageAccounts/objectReplicationPolicies/delete",
                "bob",
                f"2026-11-24T10:02:1{i}Z",
                "corr-or-cleanup",
            )
            for i, policy in enumerate(policies, start=1)
        ],
        # Carol opens the legacy profile to the internet and changes two association modes.
        sample_event(
            EG + "resource_write_success.json",
            "5f1d7a3e-0003-4c1a-9a55-000000000001",
            rule,
            "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write",
            "carol",
            "2026-11-24T11:30:00Z",
            "corr-nsp-change",
        ),
        sample_event(
            EG + "resource_write_success.json",
            "5f1d7a3e-0003-4c1a-9a55-000000000002",
            f"{NSP_ID}/resourceAssociations/assoc-clean02",
            "Microsoft.Network/networkSecurityPerimeters/resourceAssociations/write",
            "carol",
            "2026-11-24T11:31:00Z",
            "corr-nsp-change",
        ),
        sample_event(
            EG + "resource_write_success.json",
            "5f1d7a3e-0003-4c1a-9a55-000000000003",
            f"{NSP_ID}/resourceAssociations/assoc-audit01",
            "Microsoft.Network/networkSecurityPerimeters/resourceAssociations/write",
            "carol",
            "2026-11-24T11:32:00Z",
            "corr-nsp-change",
        ),
        # Dave deletes the VM whose VHDs live in stcontosovhd01.
        sample_event(
            EG + "resource_delete_success.json",
            "5f1d7a3e-0004-4c1a-9a55-000000000001",
            vm,
            "Microsoft.Compute/virtualMachines/delete",
            "dave",
            "2026-11-24T12:00:00Z",
            "corr-vm-retire",
        ),
        # Noise that must be dropped: an unrelated type, another subscription, a listKeys action.
        sample_event(
            EG + "resource_write_success.json",
            "5f1d7a3e-0005-4c1a-9a55-000000000001",
            f"/subscriptions/{SUB}/resourceGroups/{RG_APPS}/providers/Microsoft.Sql/servers/sql-contoso",
            "Microsoft.Sql/servers/write",
            "dave",
            "2026-11-24T12:05:00Z",
            "corr-noise",
        ),
        sample_event(
            EG + "resource_write_success.json",
            "5f1d7a3e-0005-4c1a-9a55-000000000002",
            account_id("stpartner01").replace(SUB, PARTNER_SUB),
            "Microsoft.Storage/storageAccounts/write",
            "dave",
            "2026-11-24T12:06:00Z",
            "corr-noise",
            subscription=PARTNER_SUB,
        ),
    ]
    return out


def render() -> dict[str, str]:
    """The text of each file under ``shared/samples`` (file name -> exact content)."""
    files = {
        name: json.dumps(build(changed), indent=1, sort_keys=True) + "\n"
        for name, changed in (("estate.json", False), ("estate-changed.json", True))
    }
    files["events.json"] = json.dumps(events(), indent=1) + "\n"
    return files


def write() -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = OUT / name
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")
