"""What the sweep compares: a storage account's compact summary and the Resource Graph inventory.

Pure types and functions (moved out of ``shared.adapters.resource_graph`` so the diff and the
pipeline need no adapter): ``AccountSummary`` and its ``summary_digest`` (equal from a Resource
Graph row, an ``AccountSummary`` and an ARM snapshot of the same account, ``summary_of_snapshot``),
``VhdVm``, ``BlobBackupInstance`` and ``GraphInventory``, whose ``reason_to_evaluate`` says which
accounts the sweep must re-read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

_BOOL_FIELDS = ("isSftpEnabled", "isNfsV3Enabled", "isHnsEnabled")
_SUMMARY_FIELDS = (
    "kind",
    "publicNetworkAccess",
    "isSftpEnabled",
    "isNfsV3Enabled",
    "isHnsEnabled",
    "keySource",
    "keyVaultUri",
    "defaultAction",
    "privateEndpoints",
)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, list | tuple):
        return len(value)
    return 0


@dataclass(frozen=True)
class AccountSummary:
    """One storage account as the ``accounts`` query sees it."""

    id: str
    kind: str = ""
    public_network_access: str = ""
    is_sftp_enabled: bool = False
    is_nfs_v3_enabled: bool = False
    is_hns_enabled: bool = False
    key_source: str = ""
    key_vault_uri: str = ""
    default_action: str = ""
    private_endpoints: int = 0
    digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", summary_digest(self))

    @property
    def name(self) -> str:
        return self.id.rstrip("/").rsplit("/", 1)[-1]

    @property
    def subscription_id(self) -> str:
        parts = self.id.strip("/").split("/")
        return parts[1].lower() if len(parts) > 1 else ""

    def fields(self) -> dict[str, Any]:
        """The summary under the query's column names."""
        return {
            "kind": self.kind,
            "publicNetworkAccess": self.public_network_access,
            "isSftpEnabled": self.is_sftp_enabled,
            "isNfsV3Enabled": self.is_nfs_v3_enabled,
            "isHnsEnabled": self.is_hns_enabled,
            "keySource": self.key_source,
            "keyVaultUri": self.key_vault_uri,
            "defaultAction": self.default_action,
            "privateEndpoints": self.private_endpoints,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AccountSummary:
        return cls(
            id=_text(row.get("id")),
            kind=_text(row.get("kind")),
            public_network_access=_text(row.get("publicNetworkAccess")),
            is_sftp_enabled=_flag(row.get("isSftpEnabled")),
            is_nfs_v3_enabled=_flag(row.get("isNfsV3Enabled")),
            is_hns_enabled=_flag(row.get("isHnsEnabled")),
            key_source=_text(row.get("keySource")) or "Microsoft.Storage",  # ARM's defaults when absent
            key_vault_uri=_text(row.get("keyVaultUri")),
            default_action=_text(row.get("defaultAction")) or "Allow",
            private_endpoints=_count(row.get("privateEndpoints")),
        )


def _digest_value(key: str, value: Any) -> Any:
    if key in _BOOL_FIELDS:
        return _flag(value)
    if key == "privateEndpoints":
        return _count(value)
    text = _text(value).lower()
    if key == "keySource":
        return text or "microsoft.storage"  # ARM's default when omitted
    if key == "defaultAction":
        return text or "allow"  # no network rule set: everything is allowed
    return text


def summary_digest(summary: AccountSummary | Mapping[str, Any]) -> str:
    """A short digest of the summary fields; equal from a Resource Graph row, an ``AccountSummary``
    and a snapshot (``summary_of_snapshot``) of the same account."""
    fields = summary.fields() if isinstance(summary, AccountSummary) else summary
    normalised = {k: _digest_value(k, fields.get(k)) for k in _SUMMARY_FIELDS}
    return hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()[:24]


def summary_of_snapshot(snapshot: Any) -> dict[str, Any]:
    """The summary fields of a ``StorageAccountSnapshot`` (the state stores its digest)."""
    return {
        "kind": snapshot.kind,
        "publicNetworkAccess": snapshot.public_network_access,
        "isSftpEnabled": snapshot.is_sftp_enabled,
        "isNfsV3Enabled": snapshot.is_nfs_v3_enabled,
        "isHnsEnabled": snapshot.is_hns_enabled,
        "keySource": snapshot.encryption.key_source,
        "keyVaultUri": snapshot.encryption.key_vault_uri,
        "defaultAction": snapshot.network_acls.default_action,
        "privateEndpoints": len(snapshot.private_endpoint_connections),
    }


def account_name_of_vhd(uri: str) -> str:
    """``https://{account}.blob.core.windows.net/...`` -> ``account`` (lower case)."""
    return uri.split("://", 1)[-1].split(".", 1)[0].split("/", 1)[0].lower()


@dataclass(frozen=True)
class VhdVm:
    """A virtual machine with unmanaged disks and where its VHDs live."""

    id: str
    vhd_uris: tuple[str, ...]

    @property
    def subscription_id(self) -> str:
        parts = self.id.strip("/").split("/")
        return parts[1].lower() if len(parts) > 1 else ""

    @property
    def account_names(self) -> frozenset[str]:
        return frozenset(account_name_of_vhd(u) for u in self.vhd_uris)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> VhdVm:
        uris = [_text(row.get("osVhd"))]
        disks = row.get("dataDisks")
        for disk in disks if isinstance(disks, list) else ():
            uris.append(_text(_get(disk, "vhd", "uri")))
        return cls(_text(row.get("id")), tuple(u for u in uris if u))


@dataclass(frozen=True)
class BlobBackupInstance:
    """A Data Protection backup instance whose data source is a storage account's blobs."""

    id: str
    storage_account_id: str  # lower case
    policy_id: str
    protection_state: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BlobBackupInstance:
        return cls(
            _text(row.get("id")),
            _text(row.get("storageAccountId")).lower(),
            _text(row.get("policyId")),
            _text(row.get("protectionState")),
        )


class StoredAccount(Protocol):
    """What the sweep compares against (``shared.core.state.base.AccountState`` fits)."""

    @property
    def summary_digest(self) -> str: ...
    @property
    def associations(self) -> Sequence[Any]: ...
    @property
    def vm_ids(self) -> Sequence[str]: ...
    @property
    def backup_instance_ids(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class GraphInventory:
    """The three queries' answers for one scope, indexed for the sweep's change test."""

    accounts: tuple[AccountSummary, ...]
    vhd_vms: tuple[VhdVm, ...] = ()
    blob_backups: tuple[BlobBackupInstance, ...] = ()
    queries: int = 0
    _vms_by_account: dict[tuple[str, str], frozenset[str]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _backups_by_account: dict[str, frozenset[str]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        vms: dict[tuple[str, str], set[str]] = {}
        for vm in self.vhd_vms:
            for name in vm.account_names:
                vms.setdefault((vm.subscription_id, name), set()).add(vm.id.lower())
        backups: dict[str, set[str]] = {}
        for instance in self.blob_backups:
            backups.setdefault(instance.storage_account_id, set()).add(instance.id.lower())
        self._vms_by_account.update({k: frozenset(v) for k, v in vms.items()})
        self._backups_by_account.update({k: frozenset(v) for k, v in backups.items()})

    def vm_ids_for(self, summary: AccountSummary) -> frozenset[str]:
        """VMs of the account's subscription with VHDs in it (what the ARM reader looks at)."""
        return self._vms_by_account.get((summary.subscription_id, summary.name.lower()), frozenset())

    def backup_ids_for(self, summary: AccountSummary) -> frozenset[str]:
        return self._backups_by_account.get(summary.id.lower(), frozenset())

    def reason_to_evaluate(self, summary: AccountSummary, stored: StoredAccount | None) -> str | None:
        """Why the sweep must re-read this account, or None when nothing it can see changed."""
        if stored is None:
            return "new"
        if stored.summary_digest != summary.digest:
            return "summary"
        if stored.associations:  # features are only read (and stored) for perimeter accounts
            if {v.lower() for v in stored.vm_ids} != self.vm_ids_for(summary):
                return "unmanaged-disks"
            if {b.lower() for b in stored.backup_instance_ids} != self.backup_ids_for(summary):
                return "backup-instances"
        return None


def _get(body: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body
