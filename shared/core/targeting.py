"""Map a ``ChangeEvent`` to what must be re-evaluated (``Target``s), or say why it is dropped.

Pure. Ids and types compare case-insensitively:
events mix ``resourcegroups`` and ``resourceGroups``, and ARM itself is case-insensitive.

What maps where:

* a storage account or any of its children           -> ACCOUNT (the account)
* a perimeter or any of its children                 -> PERIMETER (the perimeter)
* a virtual machine itself (write/delete)            -> VIRTUAL_MACHINE
* a Data Protection backup instance (or its children) -> BACKUP_INSTANCE
* a Key Vault, its keys, access policies, private endpoint connections and NSP links -> KEY_VAULT

Deletes map like writes: the evaluator re-reads, sees the 404 and resolves what it had found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from shared.core import arm_ids
from shared.core.changes import ChangeEvent, Target, TargetKind

# ARM operation-name prefixes acted on; the Event Grid subscription's `data.operationName`
# StringBeginsWith filter must cover these (and tests check it does). Backup policies are not here
# on purpose: they are dropped (see _backup).
HANDLED_OPERATIONS: Final[tuple[str, ...]] = (
    "Microsoft.Storage/storageAccounts",
    "Microsoft.Network/networkSecurityPerimeters",
    "Microsoft.Compute/virtualMachines",
    "Microsoft.DataProtection/backupVaults/backupInstances",
    "Microsoft.KeyVault/vaults",
)

# Drop categories: low-cardinality labels for metrics (the reason text carries the details).
FAILED: Final = "failed"
OUT_OF_SCOPE: Final = "out-of-scope"
MALFORMED_ID: Final = "malformed-id"
UNRELATED_TYPE: Final = "unrelated-type"
READ_ONLY_ACTION: Final = "read-only-action"
UNTRACKED_CHILD: Final = "untracked-child"
BACKUP_POLICY: Final = "backup-policy"

# Action verbs that only read (listKeys fires on every portal blade visit): no state changed.
_READ_ONLY_VERBS: Final = ("list", "get", "read", "check", "validate")

# VM actions that change which VHD blobs a VM points at; every other VM action (start,
# deallocate, restart, runCommand, ...) leaves the disk references alone.
_VM_DISK_ACTIONS: Final = frozenset({"converttomanageddisks", "attachdetachdatadisks"})

# Key Vault children that can change whether a storage account's CMK is usable from the perimeter.
# Secrets, certificates etc. cannot, and a vault sees many secret writes.
_VAULT_CHILDREN: Final = frozenset(
    {
        "keys",
        "accesspolicies",
        "privateendpointconnections",
        "networksecurityperimeterassociationproxies",
        "networksecurityperimeterconfigurations",
    }
)


@dataclass(frozen=True)
class Scope:
    """Subscriptions whose events are acted on; empty means all.

    A tuple (as ``settings.Settings.subscriptions`` holds them); any casing or stray whitespace is
    normalised on construction so that callers may pass ids as configured.
    """

    subscriptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        normalised = tuple(sorted({s.strip().lower() for s in self.subscriptions if s and s.strip()}))
        object.__setattr__(self, "subscriptions", normalised)

    @classmethod
    def of(cls, subscriptions: Iterable[str]) -> Scope:
        return cls(tuple(subscriptions))

    def allows(self, subscription_id: str) -> bool:
        return not self.subscriptions or subscription_id.strip().lower() in self.subscriptions


@dataclass(frozen=True)
class TargetDecision:
    targets: tuple[Target, ...] = ()
    dropped: str = ""  # why nothing is evaluated; empty when kept
    category: str = ""  # the drop's category (one of the constants above), tallied in the pipeline's report

    @property
    def kept(self) -> bool:
        return not self.dropped


def _keep(kind: TargetKind, resource_id: str) -> TargetDecision:
    return TargetDecision(targets=(Target(kind, resource_id),))


def _drop(category: str, reason: str) -> TargetDecision:
    return TargetDecision(dropped=reason, category=category)


def _failure(event: ChangeEvent) -> TargetDecision | None:
    event_type = event.event_type.lower()
    if event_type.endswith("failure"):
        return _drop(FAILED, f"operation failed ({event.event_type})")
    if event_type.endswith("cancel"):
        return _drop(FAILED, f"operation cancelled ({event.event_type})")
    status = event.status.strip().lower()
    # Resource Notifications carry no status (they only fire on success): empty is fine.
    if status and status != "succeeded":
        what = "cancelled" if status in {"canceled", "cancelled"} else "failed"
        return _drop(FAILED, f"operation {what} (status {event.status})")
    return None


def _action_verb(event: ChangeEvent) -> str | None:
    """The verb of an action event (``listKeys`` of ``.../listKeys/action``), None for write/delete."""
    operation = event.operation_name.strip().strip("/").lower()
    is_action = event.event_type.lower().startswith("microsoft.resources.resourceaction") or (
        operation.endswith("/action")
    )
    if not is_action:
        return None
    parts = operation.split("/")
    return parts[-2] if len(parts) >= 2 and parts[-1] == "action" else ""


def _unparsed_type(resource_id: str) -> str:
    """A readable type for well-formed ids that name no provider resource (groups, subscriptions)."""
    parts = arm_ids.normalise(resource_id).strip("/").lower().split("/")
    if parts[0] == "subscriptions" and len(parts) <= 2:
        return "microsoft.resources/subscriptions"
    if parts[0] == "subscriptions" and len(parts) <= 4 and parts[2] == "resourcegroups":
        return "microsoft.resources/resourcegroups"
    return "/".join(parts[:4]) or "(none)"


def _storage(parsed: arm_ids.ResourceId) -> TargetDecision | None:
    if parsed.segments[0][0].lower() != "storageaccounts":
        return None
    # Every child (services, shares, policies, NSP configurations, local users, ...) can change a
    # finding, and a delete of the account resolves its findings once the evaluator sees the 404.
    return _keep(TargetKind.ACCOUNT, parsed.top_level_id)


def _perimeter(parsed: arm_ids.ResourceId) -> TargetDecision | None:
    if parsed.segments[0][0].lower() != "networksecurityperimeters":
        return None
    # Profiles, access rules, associations (also Key Vault ones), links, logging: all re-evaluate
    # the accounts associated with the perimeter.
    return _keep(TargetKind.PERIMETER, parsed.top_level_id)


def _virtual_machine(parsed: arm_ids.ResourceId, verb: str | None) -> TargetDecision | None:
    if parsed.segments[0][0].lower() != "virtualmachines":
        return None
    if len(parsed.segments) > 1:
        # Extensions, run commands etc. cannot change the VHD URIs the unmanaged-disk rule reads.
        return _drop(UNTRACKED_CHILD, f"untracked child resource {parsed.full_type}")
    if verb is not None and verb.lower() not in _VM_DISK_ACTIONS:
        return _drop(READ_ONLY_ACTION, f"virtual machine action {verb or '(unknown)'} does not change its disks")
    return _keep(TargetKind.VIRTUAL_MACHINE, parsed.top_level_id)


def _backup(parsed: arm_ids.ResourceId) -> TargetDecision | None:
    if parsed.segments[0][0].lower() != "backupvaults" or len(parsed.segments) < 2:
        return None
    child_type, child_name = parsed.segments[1]
    if child_type.lower() == "backupinstances" and child_name:
        return _keep(TargetKind.BACKUP_INSTANCE, parsed.prefix(2))
    if child_type.lower() == "backuppolicies":
        # A policy change can turn an operational backup into a vaulted one, but a policy does not
        # list the instances that use it: finding them means reading the vault, which this pure
        # mapping cannot do, and no TargetKind stands for "every instance of policy P". Mapping the
        # policy id to BACKUP_INSTANCE would make the evaluator read a policy as an instance.
        # The reconciliation sweep re-reads every instance with its policy, so drop it here.
        return _drop(BACKUP_POLICY, "backup policy changes are reconciled by the sweep")
    return None


def _key_vault(parsed: arm_ids.ResourceId) -> TargetDecision | None:
    if parsed.segments[0][0].lower() != "vaults":
        return None
    if len(parsed.segments) > 1 and parsed.segments[1][0].lower() not in _VAULT_CHILDREN:
        return _drop(UNTRACKED_CHILD, f"untracked child resource {parsed.full_type}")
    return _keep(TargetKind.KEY_VAULT, parsed.top_level_id)


# The mapping of each resource provider handled; the verb matters to virtual machines only.
_BY_NAMESPACE: Final[Mapping[str, Callable[[arm_ids.ResourceId, str | None], TargetDecision | None]]] = {
    "microsoft.storage": lambda parsed, _verb: _storage(parsed),
    "microsoft.network": lambda parsed, _verb: _perimeter(parsed),
    "microsoft.compute": _virtual_machine,
    "microsoft.dataprotection": lambda parsed, _verb: _backup(parsed),
    "microsoft.keyvault": lambda parsed, _verb: _key_vault(parsed),
}


def _parsed_in_scope(event: ChangeEvent, scope: Scope) -> arm_ids.ResourceId | TargetDecision:
    """The event's resource id, parsed, or why it is dropped before its type is looked up
    (malformed, out of scope, no resource type, or an extension resource)."""
    resource_id = event.resource_id
    if not arm_ids.is_well_formed(resource_id):
        return _drop(MALFORMED_ID, f"malformed resource id {resource_id[:120]!r}")
    parsed = arm_ids.parse(resource_id)

    parts = arm_ids.normalise(resource_id).strip("/").split("/")
    subscription = parts[1] if parts[0].lower() == "subscriptions" else event.subscription_id
    if not scope.allows(subscription):
        return _drop(OUT_OF_SCOPE, f"subscription {subscription} out of scope")
    if parsed is None or not parsed.segments or not parsed.segments[0][1]:
        return _drop(UNRELATED_TYPE, f"unrelated resource type {_unparsed_type(resource_id)}")

    own_type = arm_ids.resource_type(resource_id).lower()
    if own_type != parsed.full_type:
        # An extension resource (a lock, role assignment or diagnostic setting on an account) is
        # not a child of the resource it sits on and changes nothing the rules read.
        return _drop(UNRELATED_TYPE, f"unrelated resource type {own_type}")
    return parsed


def targets_for(event: ChangeEvent, scope: Scope) -> TargetDecision:
    """What ``event`` makes us re-evaluate, or why nothing (``dropped`` names the reason)."""
    failed = _failure(event)
    if failed is not None:
        return failed
    parsed = _parsed_in_scope(event, scope)
    if isinstance(parsed, TargetDecision):
        return parsed

    verb = _action_verb(event)
    mapping = _BY_NAMESPACE.get(parsed.namespace.lower())
    decision = None if mapping is None else mapping(parsed, verb)
    if decision is None:
        return _drop(UNRELATED_TYPE, f"unrelated resource type {parsed.full_type}")
    if decision.kept and verb and verb.lower().startswith(_READ_ONLY_VERBS):
        # Checked last so that an unrelated type is reported as such, not as a read-only action.
        return _drop(READ_ONLY_ACTION, f"read-only action {event.operation_name}")
    return decision
