"""shared.core.targeting: every resource kind, children, casing, drops with reasons, scope, counters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.changes import ChangeEvent, Target, TargetKind
from shared.core.events import parse_event
from shared.core.targeting import (
    BACKUP_POLICY,
    FAILED,
    HANDLED_OPERATIONS,
    MALFORMED_ID,
    OUT_OF_SCOPE,
    READ_ONLY_ACTION,
    UNRELATED_TYPE,
    UNTRACKED_CHILD,
    Scope,
    TargetDecision,
    targets_for,
)

SUB = "00000000-0000-0000-0000-000000000001"
OTHER_SUB = "00000000-0000-0000-0000-000000000002"
RG = f"/subscriptions/{SUB}/resourceGroups/rg1"
ACCOUNT = f"{RG}/providers/Microsoft.Storage/storageAccounts/acct1"
PERIMETER = f"{RG}/providers/Microsoft.Network/networkSecurityPerimeters/nsp1"
VM = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm1"
VAULT = f"{RG}/providers/Microsoft.DataProtection/backupVaults/bv1"
INSTANCE = f"{VAULT}/backupInstances/bi1"
KEY_VAULT = f"{RG}/providers/Microsoft.KeyVault/vaults/kv1"

WRITE = "Microsoft.Resources.ResourceWriteSuccess"
DELETE = "Microsoft.Resources.ResourceDeleteSuccess"
ACTION = "Microsoft.Resources.ResourceActionSuccess"
ALL = Scope()

CORPUS = Path(__file__).resolve().parent / "corpus"


def event(
    resource_id: str,
    operation: str | None = None,
    event_type: str = WRITE,
    status: str = "Succeeded",
    subscription: str = SUB,
) -> ChangeEvent:
    """A parsed event as events.parse_event builds it; the operation defaults to the id's type + verb."""
    if operation is None:
        verb = {WRITE: "write", DELETE: "delete"}.get(event_type, "write")
        parts = resource_id.split("/providers/", 1)[1].split("/")
        operation = "/".join([parts[0], *parts[1::2], verb])
    return ChangeEvent(
        event_id="e1",
        event_type=event_type,
        resource_id=resource_id,
        subscription_id=subscription,
        operation_name=operation,
        status=status,
    )


def only_target(decision: TargetDecision) -> Target:
    assert decision.kept, decision.dropped
    assert decision.dropped == "" and decision.category == ""
    assert len(decision.targets) == 1
    return decision.targets[0]


# --- what maps where ------------------------------------------------------------------------------

STORAGE_CHILDREN = [
    "",
    "/blobServices/default",
    "/blobServices/default/containers/c1",
    "/fileServices/default",
    "/fileServices/default/shares/share1",
    "/managementPolicies/default",
    "/inventoryPolicies/default",
    "/objectReplicationPolicies/default",
    "/networkSecurityPerimeterConfigurations/cfg.1",
    "/networkSecurityPerimeterAssociationProxies/p1",
    "/privateEndpointConnections/pec1",
    "/localUsers/sftpuser",
    "/encryptionScopes/scope1",
    "/queueServices/default",
    "/tableServices/default/tables/t1",
]


@pytest.mark.parametrize("child", STORAGE_CHILDREN)
@pytest.mark.parametrize("event_type", [WRITE, DELETE])
def test_storage_account_and_children_target_the_account(child: str, event_type: str) -> None:
    target = only_target(targets_for(event(ACCOUNT + child, event_type=event_type), ALL))
    assert target == Target(TargetKind.ACCOUNT, ACCOUNT)


@pytest.mark.parametrize(
    "resource_id",
    [
        ACCOUNT.replace("resourceGroups", "resourcegroups"),
        ACCOUNT.replace("resourceGroups", "RESOURCEGROUPS").replace("Microsoft.Storage", "microsoft.storage"),
        ACCOUNT.replace("storageAccounts", "STORAGEACCOUNTS") + "/BLOBSERVICES/default",
        ACCOUNT.upper(),
        "  " + ACCOUNT + "/ ",
    ],
)
def test_casing_and_whitespace_do_not_change_the_target_key(resource_id: str) -> None:
    target = only_target(targets_for(event(resource_id, "Microsoft.Storage/storageAccounts/write"), ALL))
    assert target.kind is TargetKind.ACCOUNT
    assert target.key == Target(TargetKind.ACCOUNT, ACCOUNT).key


def test_account_delete_targets_the_account() -> None:
    decision = targets_for(event(ACCOUNT, event_type=DELETE), ALL)
    assert only_target(decision) == Target(TargetKind.ACCOUNT, ACCOUNT)


@pytest.mark.parametrize(
    "child",
    [
        "",
        "/profiles/default",
        "/profiles/default/accessRules/allow-corp",
        "/resourceAssociations/assoc-kv",
        "/resourceAssociations/assoc-storage",
        "/links/link1",
        "/linkReferences/ref1",
        "/loggingConfigurations/instance",
        "/resourceAssociationProxies/p1",
    ],
)
def test_perimeter_and_children_target_the_perimeter(child: str) -> None:
    assert only_target(targets_for(event(PERIMETER + child), ALL)) == Target(TargetKind.PERIMETER, PERIMETER)
    deleted = targets_for(event(PERIMETER + child, event_type=DELETE), ALL)
    assert only_target(deleted) == Target(TargetKind.PERIMETER, PERIMETER)


@pytest.mark.parametrize("event_type", [WRITE, DELETE])
def test_virtual_machine_write_and_delete(event_type: str) -> None:
    decision = targets_for(event(VM, event_type=event_type), ALL)
    assert only_target(decision) == Target(TargetKind.VIRTUAL_MACHINE, VM)


def test_virtual_machine_children_are_dropped() -> None:
    decision = targets_for(event(f"{VM}/extensions/CustomScript"), ALL)
    assert not decision.kept and decision.targets == ()
    assert decision.category == UNTRACKED_CHILD
    assert decision.dropped == "untracked child resource microsoft.compute/virtualmachines/extensions"


def test_virtual_machine_power_actions_are_dropped_disk_conversion_kept() -> None:
    start = targets_for(event(VM, "Microsoft.Compute/virtualMachines/start/action", ACTION), ALL)
    assert start.category == READ_ONLY_ACTION and "start" in start.dropped
    convert = targets_for(
        event(VM, "Microsoft.Compute/virtualMachines/convertToManagedDisks/action", ACTION), ALL
    )
    assert only_target(convert) == Target(TargetKind.VIRTUAL_MACHINE, VM)


def test_other_compute_types_are_unrelated() -> None:
    scale_set = f"{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/vmss1"
    decision = targets_for(event(scale_set), ALL)
    assert decision.dropped == "unrelated resource type microsoft.compute/virtualmachinescalesets"
    assert decision.category == UNRELATED_TYPE


@pytest.mark.parametrize("child", ["", "/operationResults/op1"])
def test_backup_instance(child: str) -> None:
    decision = targets_for(event(INSTANCE + child), ALL)
    assert only_target(decision) == Target(TargetKind.BACKUP_INSTANCE, INSTANCE)
    stop = targets_for(
        event(
            INSTANCE, "Microsoft.DataProtection/backupVaults/backupInstances/stopProtection/action", ACTION
        ),
        ALL,
    )
    assert only_target(stop) == Target(TargetKind.BACKUP_INSTANCE, INSTANCE)


def test_backup_policy_is_left_to_the_sweep() -> None:
    decision = targets_for(event(f"{VAULT}/backupPolicies/daily"), ALL)
    assert decision.targets == ()
    assert decision.dropped == "backup policy changes are reconciled by the sweep"
    assert decision.category == BACKUP_POLICY


def test_backup_vault_itself_is_unrelated() -> None:
    decision = targets_for(event(VAULT), ALL)
    assert decision.dropped == "unrelated resource type microsoft.dataprotection/backupvaults"


@pytest.mark.parametrize(
    "child",
    ["", "/keys/cmk", "/keys/cmk/versions/abc", "/accessPolicies/add", "/privateEndpointConnections/pec1"],
)
@pytest.mark.parametrize("event_type", [WRITE, DELETE])
def test_key_vault_and_relevant_children(child: str, event_type: str) -> None:
    decision = targets_for(event(KEY_VAULT + child, event_type=event_type), ALL)
    assert only_target(decision) == Target(TargetKind.KEY_VAULT, KEY_VAULT)


def test_key_vault_secrets_are_dropped() -> None:
    decision = targets_for(event(f"{KEY_VAULT}/secrets/s1"), ALL)
    assert decision.category == UNTRACKED_CHILD
    assert decision.dropped == "untracked child resource microsoft.keyvault/vaults/secrets"


def test_key_vault_association_is_a_perimeter_change() -> None:
    decision = targets_for(event(f"{PERIMETER}/resourceAssociations/kv1-assoc"), ALL)
    assert only_target(decision) == Target(TargetKind.PERIMETER, PERIMETER)


@pytest.mark.parametrize("schema", ["event-grid-schema", "cloud-events-schema"])
@pytest.mark.parametrize("name", ["Resources_CreatedOrUpdated.json", "Resources_Deleted.json"])
def test_arn_storage_events_target_the_account(schema: str, name: str) -> None:
    raw: dict[str, Any] = json.loads(
        (CORPUS / "eventgrid-Microsoft.ResourceNotifications" / schema / name).read_text(encoding="utf-8")
    )
    parsed = parse_event(raw)
    target = only_target(targets_for(parsed, ALL))
    assert target.kind is TargetKind.ACCOUNT
    assert target.resource_id == parsed.resource_id and " " not in target.resource_id


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resource_write_success.json", TargetKind.ACCOUNT),
        ("resource_delete_success.json", TargetKind.ACCOUNT),
        ("resource_action_success.json", None),
    ],
)
def test_official_resources_samples(name: str, expected: TargetKind | None) -> None:
    for schema in ("event-grid-schema", "cloud-events-schema"):
        path = CORPUS / "eventgrid-Microsoft.Resources" / schema / name
        decision = targets_for(parse_event(json.loads(path.read_text(encoding="utf-8"))), ALL)
        if expected is None:
            assert (
                decision.dropped == "unrelated resource type microsoft.eventhub/namespaces/authorizationrules"
            )
        else:
            assert only_target(decision).kind is expected


# --- drops ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "status", "reason"),
    [
        ("Microsoft.Resources.ResourceWriteFailure", "Failed", "operation failed"),
        ("Microsoft.Resources.ResourceDeleteFailure", "Failed", "operation failed"),
        ("Microsoft.Resources.ResourceActionFailure", "Failed", "operation failed"),
        ("Microsoft.Resources.ResourceWriteCancel", "Canceled", "operation cancelled"),
        ("microsoft.resources.resourcedeletecancel", "Canceled", "operation cancelled"),
        (WRITE, "Failed", "operation failed (status Failed)"),
        (WRITE, "canceled", "operation cancelled (status canceled)"),
        (WRITE, "Accepted", "operation failed (status Accepted)"),
    ],
)
def test_failed_or_cancelled_operations_are_dropped(event_type: str, status: str, reason: str) -> None:
    decision = targets_for(event(ACCOUNT, event_type=event_type, status=status), ALL)
    assert decision.targets == ()
    assert decision.dropped.startswith(reason)
    assert decision.category == FAILED


def test_empty_status_is_not_a_failure() -> None:
    # Resource Notifications carry no status.
    decision = targets_for(event(ACCOUNT, status=""), ALL)
    assert decision.kept


@pytest.mark.parametrize(
    ("resource_id", "reason"),
    [
        (f"{RG}/providers/Microsoft.Sql/servers/sql1", "unrelated resource type microsoft.sql/servers"),
        (
            f"{RG}/providers/Microsoft.Network/virtualNetworks/vnet1",
            "unrelated resource type microsoft.network/virtualnetworks",
        ),
        (
            f"{RG}/providers/Microsoft.Storage/storageTasks/t1",
            "unrelated resource type microsoft.storage/storagetasks",
        ),
        (RG, "unrelated resource type microsoft.resources/resourcegroups"),
        (f"/subscriptions/{SUB}", "unrelated resource type microsoft.resources/subscriptions"),
        (
            f"{ACCOUNT}/providers/Microsoft.Authorization/locks/lock1",
            "unrelated resource type microsoft.authorization/locks",
        ),
        (
            f"{ACCOUNT}/providers/Microsoft.Insights/diagnosticSettings/diag",
            "unrelated resource type microsoft.insights/diagnosticsettings",
        ),
        (f"{RG}/providers/Microsoft.Storage/storageAccounts", "unrelated resource type"),
    ],
)
def test_unrelated_types_are_dropped_with_the_type(resource_id: str, reason: str) -> None:
    decision = targets_for(event(resource_id, "Contoso.X/y/write"), ALL)
    assert decision.targets == ()
    assert decision.dropped.startswith(reason)
    assert decision.category == UNRELATED_TYPE


@pytest.mark.parametrize(
    "resource_id",
    [
        f"{RG}/providers/Microsoft.Storage/storageAccounts/../../x",
        f"{RG}/providers/Microsoft.Storage/storageAccounts/acct1/..",
        f"/subscriptions/{SUB}/resourceGroups/./providers/Microsoft.Storage/storageAccounts/a",
        f"{RG}/providers/Microsoft.Storage/storageAccounts/%2E%2E",
        f"{RG}/providers/Microsoft.Storage/storageAccounts/a%2F..%2Fb",
        f"{RG}/providers/Microsoft.Storage/storageAccounts/a\nb",
        "https://management.azure.com" + ACCOUNT,
        "",
        "/subscriptions/" + "a" * 3000,
    ],
)
def test_malformed_ids_are_dropped(resource_id: str) -> None:
    ev = ChangeEvent(event_id="e", event_type=WRITE, resource_id=resource_id, subscription_id=SUB)
    decision = targets_for(ev, ALL)
    assert decision.targets == ()
    assert decision.category == MALFORMED_ID
    assert decision.dropped.startswith("malformed resource id")


@pytest.mark.parametrize(
    "operation",
    [
        "Microsoft.Storage/storageAccounts/listKeys/action",
        "Microsoft.Storage/storageAccounts/listAccountSas/action",
        "Microsoft.Storage/storageAccounts/ListServiceSas/action",
    ],
)
def test_read_only_actions_are_dropped(operation: str) -> None:
    decision = targets_for(event(ACCOUNT, operation, ACTION), ALL)
    assert decision.category == READ_ONLY_ACTION
    assert decision.dropped == f"read-only action {operation}"


@pytest.mark.parametrize(
    "operation",
    [
        "Microsoft.Storage/storageAccounts/joinPerimeter/action",
        "Microsoft.Storage/storageAccounts/regeneratekey/action",
        "Microsoft.Storage/storageAccounts/failover/action",
    ],
)
def test_state_changing_storage_actions_are_kept(operation: str) -> None:
    assert only_target(targets_for(event(ACCOUNT, operation, ACTION), ALL)).kind is TargetKind.ACCOUNT


# --- scope ----------------------------------------------------------------------------------------


def test_scope_filters_subscriptions_case_insensitively() -> None:
    scope = Scope.of([f" {SUB.upper()} ", ""])
    assert scope.subscriptions == (SUB,)
    assert Scope((SUB, SUB.upper())) == Scope.of([SUB])
    assert targets_for(event(ACCOUNT), scope).kept
    lower_id = ACCOUNT.replace(SUB, SUB.upper())
    assert targets_for(event(lower_id), scope).kept

    other = ACCOUNT.replace(SUB, OTHER_SUB)
    decision = targets_for(event(other, subscription=OTHER_SUB), scope)
    assert decision.targets == ()
    assert decision.dropped == f"subscription {OTHER_SUB} out of scope"
    assert decision.category == OUT_OF_SCOPE


def test_scope_uses_the_resource_ids_subscription() -> None:
    # The id is what gets evaluated, so it decides even if the event's field disagrees.
    scope = Scope.of([SUB])
    assert not targets_for(event(ACCOUNT.replace(SUB, OTHER_SUB), subscription=SUB), scope).kept


def test_empty_scope_allows_everything() -> None:
    assert Scope().allows(OTHER_SUB)
    assert targets_for(event(ACCOUNT.replace(SUB, OTHER_SUB)), Scope()).kept


def test_scope_is_frozen() -> None:
    scope = Scope.of([SUB])
    with pytest.raises(AttributeError):
        scope.subscriptions = ()  # type: ignore[misc]


# --- HANDLED_OPERATIONS ---------------------------------------------------------------------------

# From docs/azure-apis.md §1.7 and §2.2: the operations that change what the rules read.
DOCUMENTED_OPERATIONS = [
    "Microsoft.Network/networkSecurityPerimeters/write",
    "Microsoft.Network/networkSecurityPerimeters/delete",
    "Microsoft.Network/networkSecurityPerimeters/profiles/write",
    "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write",
    "Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/delete",
    "Microsoft.Network/networkSecurityPerimeters/resourceAssociations/write",
    "Microsoft.Network/networkSecurityPerimeters/resourceAssociations/delete",
    "Microsoft.Storage/storageAccounts/write",
    "Microsoft.Storage/storageAccounts/joinPerimeter/action",
    "Microsoft.Storage/storageAccounts/objectReplicationPolicies/write",
    "Microsoft.Storage/storageAccounts/managementPolicies/delete",
    "Microsoft.Storage/storageAccounts/inventoryPolicies/write",
    "Microsoft.Storage/storageAccounts/blobServices/write",
    "Microsoft.Storage/storageAccounts/fileServices/shares/write",
    "Microsoft.Storage/storageAccounts/localusers/write",
    "Microsoft.Storage/storageAccounts/encryptionScopes/write",
    "Microsoft.Storage/storageAccounts/privateEndpointConnections/write",
    "Microsoft.Storage/storageAccounts/networkSecurityPerimeterAssociationProxies/write",
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.DataProtection/backupVaults/backupInstances/write",
    "Microsoft.KeyVault/vaults/write",
    "Microsoft.KeyVault/vaults/keys/write",
]


def covered(operation: str) -> bool:
    # Event Grid's StringBeginsWith is case-insensitive.
    return any(operation.lower().startswith(prefix.lower()) for prefix in HANDLED_OPERATIONS)


@pytest.mark.parametrize("operation", DOCUMENTED_OPERATIONS)
def test_documented_operations_are_covered(operation: str) -> None:
    assert covered(operation)


def _id_of_type(prefix: str) -> str:
    namespace, *types = prefix.split("/")
    return f"{RG}/providers/{namespace}" + "".join(f"/{t}/n{i}" for i, t in enumerate(types))


@pytest.mark.parametrize("prefix", HANDLED_OPERATIONS)
def test_every_handled_prefix_is_acted_on(prefix: str) -> None:
    resource_id = _id_of_type(prefix)
    decision = targets_for(event(resource_id, f"{prefix}/write"), ALL)
    assert only_target(decision).resource_id == resource_id


@pytest.mark.parametrize(
    "resource_id",
    [ACCOUNT + c for c in STORAGE_CHILDREN]
    + [PERIMETER + "/profiles/p", VM, INSTANCE, KEY_VAULT + "/keys/k"],
)
def test_kept_events_pass_the_operation_filter(resource_id: str) -> None:
    # The default operation name of event() is what ARM sends: it must pass the Bicep filter.
    ev = event(resource_id)
    assert targets_for(ev, ALL).kept
    assert covered(ev.operation_name), ev.operation_name


# --- property -------------------------------------------------------------------------------------

ID_PARTS = st.sampled_from(
    [
        "subscriptions",
        SUB,
        "resourceGroups",
        "rg",
        "providers",
        "Microsoft.Storage",
        "storageAccounts",
        "Microsoft.Network",
        "networkSecurityPerimeters",
        "Microsoft.Compute",
        "virtualMachines",
        "Microsoft.KeyVault",
        "vaults",
        "backupVaults",
        "backupInstances",
        "..",
        ".",
        "",
        " ",
        "x",
    ]
)


@settings(max_examples=300)
@given(
    st.lists(ID_PARTS, max_size=12).map(lambda parts: "/" + "/".join(parts)) | st.text(max_size=60),
    st.text(max_size=30),
    st.sampled_from([WRITE, DELETE, ACTION, "x", ""]),
    st.text(max_size=10),
    st.text(max_size=40),
)
def test_targets_for_is_total(
    resource_id: str, operation: str, event_type: str, status: str, sub: str
) -> None:
    ev = ChangeEvent(
        event_id="e",
        event_type=event_type,
        resource_id=resource_id,
        subscription_id=sub,
        operation_name=operation,
        status=status,
    )
    decision = targets_for(ev, Scope.of([SUB]))
    assert decision.kept == bool(decision.targets)
    assert decision.kept or decision.category
    for target in decision.targets:
        assert ".." not in target.resource_id.split("/")
        assert target.resource_id.lower().startswith(f"/subscriptions/{SUB}/")
