"""The domain model: plain, typed, immutable snapshots of what the rules look at.

Nothing here imports an Azure SDK. The reader adapter (``shared.adapters.arm_reader``) turns SDK
models into these types; the rules, the diff and the outputs only ever see these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """Ordered so that ``severity >= Severity.HIGH`` reads naturally."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (expected one of: {names})") from None


class AccessMode(enum.StrEnum):
    """NSP association access mode as it is on the wire.

    The docs now call ``Learning`` "Transition mode"; the API has no ``Transition`` value.
    Anything the API adds later is kept verbatim as UNKNOWN with the raw text in the view.
    """

    LEARNING = "Learning"
    ENFORCED = "Enforced"
    AUDIT = "Audit"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, text: str | None) -> AccessMode:
        if not text:
            return cls.UNKNOWN
        lowered = text.strip().lower()
        if lowered == "transition":  # the docs' new name for Learning
            return cls.LEARNING
        for mode in cls:
            if mode.value.lower() == lowered:
                return mode
        return cls.UNKNOWN


@dataclass(frozen=True)
class AccessRule:
    """One effective NSP access rule of the account's profile."""

    name: str
    direction: str  # "Inbound" | "Outbound" (verbatim)
    address_prefixes: tuple[str, ...] = ()
    subscriptions: tuple[str, ...] = ()  # "/subscriptions/{guid}" ids
    fully_qualified_domain_names: tuple[str, ...] = ()
    service_tags: tuple[str, ...] = ()
    network_security_perimeters: tuple[str, ...] = ()  # perimeter ids of perimeter-based rules
    email_addresses: tuple[str, ...] = ()
    phone_numbers: tuple[str, ...] = ()

    @property
    def is_inbound(self) -> bool:
        return self.direction.lower() == "inbound"


@dataclass(frozen=True)
class ProvisioningIssue:
    name: str
    issue_type: str
    severity: str  # "Warning" | "Error" (verbatim)
    description: str
    suggested_resource_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PerimeterView:
    """What ``networkSecurityPerimeterConfigurations`` of the account says about one association."""

    configuration_name: str
    perimeter_id: str
    perimeter_guid: str
    location: str
    association_name: str
    access_mode: AccessMode
    access_mode_raw: str
    profile_name: str
    access_rules_version: int | None
    access_rules: tuple[AccessRule, ...] = ()
    provisioning_state: str = ""
    provisioning_issues: tuple[ProvisioningIssue, ...] = ()
    # Resource ids (lower-cased) of every resource associated with the same perimeter, when the
    # reader looked them up (it does so only when a rule needs it, e.g. CMK); None = not read.
    perimeter_members: tuple[str, ...] | None = None


@dataclass(frozen=True)
class NetworkAcls:
    default_action: str = "Allow"
    bypass: str = ""
    ip_rules: tuple[str, ...] = ()
    virtual_network_rules: tuple[str, ...] = ()
    resource_access_rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectReplicationPolicy:
    policy_id: str
    source_account: str
    destination_account: str
    rule_count: int = 0


@dataclass(frozen=True)
class LifecycleRule:
    name: str
    enabled: bool
    rule_type: str = "Lifecycle"


@dataclass(frozen=True)
class InventoryRule:
    name: str
    enabled: bool
    destination: str


@dataclass(frozen=True)
class InventoryPolicy:
    enabled: bool
    rules: tuple[InventoryRule, ...] = ()


@dataclass(frozen=True)
class FileShare:
    name: str
    enabled_protocols: str  # "SMB" | "NFS" (verbatim; ARM omits it for SMB shares)

    @property
    def is_nfs(self) -> bool:
        return self.enabled_protocols.upper() == "NFS"


@dataclass(frozen=True)
class UnmanagedDisk:
    vm_id: str
    disk_name: str
    vhd_uri: str
    is_os_disk: bool


@dataclass(frozen=True)
class BackupInstance:
    instance_id: str
    datasource_type: str
    policy_id: str
    protection_state: str
    # Data store types the policy writes to ("OperationalStore", "VaultStore", ...); empty when
    # the policy could not be read.
    datastore_types: tuple[str, ...] = ()

    @property
    def is_vaulted(self) -> bool:
        return any(t.lower() == "vaultstore" for t in self.datastore_types)


@dataclass(frozen=True)
class Encryption:
    key_source: str = "Microsoft.Storage"
    key_vault_uri: str = ""
    key_name: str = ""

    @property
    def uses_customer_managed_key(self) -> bool:
        return self.key_source.lower() == "microsoft.keyvault" and bool(self.key_vault_uri)

    @property
    def key_vault_name(self) -> str:
        """Vault names are globally unique DNS labels: the URI's first label is the vault."""
        host = self.key_vault_uri.split("://", 1)[-1].split("/", 1)[0]
        return host.split(".", 1)[0].lower()


@dataclass(frozen=True)
class StorageAccountSnapshot:
    """Everything the rules need about one storage account, read at one moment."""

    id: str
    name: str
    subscription_id: str
    resource_group: str
    location: str = ""
    kind: str = ""
    sku: str = ""
    is_sftp_enabled: bool = False
    is_nfs_v3_enabled: bool = False
    is_hns_enabled: bool = False
    is_local_user_enabled: bool = False
    static_website_enabled: bool = False
    allow_cross_tenant_replication: bool | None = None
    public_network_access: str = ""
    network_acls: NetworkAcls = field(default_factory=NetworkAcls)
    private_endpoint_connections: tuple[str, ...] = ()
    encryption: Encryption = field(default_factory=Encryption)
    object_replication_policies: tuple[ObjectReplicationPolicy, ...] = ()
    lifecycle_rules: tuple[LifecycleRule, ...] = ()
    inventory_policy: InventoryPolicy | None = None
    file_shares: tuple[FileShare, ...] = ()
    unmanaged_disks: tuple[UnmanagedDisk, ...] = ()
    backup_instances: tuple[BackupInstance, ...] = ()
    perimeters: tuple[PerimeterView, ...] = ()
    # Reads that failed for a reason other than "not configured" (names of the parts): the
    # evaluation is partial and the pipeline must not resolve findings that depend on them.
    incomplete: tuple[str, ...] = ()
    # True when only the perimeter side was read (a perimeter change): the account's own
    # properties come from its stored state (``AccountState.facts``) and no feature was read.
    account_from_state: bool = False
    # Features deliberately not read (names of the parts, as in ``incomplete``): a storage account
    # event leaves the subscription's VMs and the backup instances to their own events
    # (shared.service.pipeline.LINKED_READS); the rules that stand on them are not judged.
    not_read: tuple[str, ...] = ()

    @property
    def in_perimeter(self) -> bool:
        return bool(self.perimeters)


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one account, as Azure Policy and AWS Config report compliance.

    ``evidence`` is what makes it true, one item per thing the rule found (a disk and its VM, a
    replication policy, a share, an offending access rule), ordered by its ``subject`` (each item
    also carries that thing's ``summary``): three VHDs of one VM are one finding with three items.
    A change of evidence is a ``changed`` transition of the same finding (shared.core.drift)."""

    rule_id: str
    title: str
    severity: Severity
    resource_id: str
    account_name: str
    perimeter_id: str | None
    summary: str
    evidence: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    suppression_note: str = ""

    @property
    def key(self) -> str:
        """Stable identity across evaluations: rule and account (ARM ids compare case-insensitively).

        The trailing separator is the empty subject of the per-subject keys stored before findings
        were one per rule and account: a rule that always had one finding per account keeps its
        key (and so its occurrences, task references and tags); shared.adapters.state.legacy merges the rest."""
        return finding_key(self.rule_id, self.resource_id)

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(str(item.get("subject", "")) for item in self.evidence)


def finding_key(rule_id: str, resource_id: str) -> str:
    return f"{rule_id}|{resource_id.lower()}|"


@dataclass(frozen=True)
class Evaluation:
    """The result of running the rules over one snapshot."""

    snapshot: StorageAccountSnapshot
    findings: tuple[Finding, ...]
    suppressed: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class AccountResult:
    """One account of a scan (shared.service.scan): its evaluation, or why it could not be read."""

    account_id: str
    evaluation: Evaluation | None  # None when the account could not be read
    error: str = ""


class AccountNotFound(LookupError):
    """The storage account does not exist (deleted, or never did)."""
