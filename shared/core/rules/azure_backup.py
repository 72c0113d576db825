from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES, TargetKind
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, LEARN_2025_07, Hit, Rule, RuleParams


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for instance in account.backup_instances:
        name = instance.instance_id.rstrip("/").rsplit("/", 1)[-1]
        if instance.is_vaulted:
            severity, what = Severity.HIGH, "a vaulted backup (copies blobs to a Backup vault)"
        elif instance.datastore_types:
            severity, what = Severity.LOW, "an operational backup"
        else:
            severity, what = Severity.MEDIUM, "a backup whose policy could not be read"
        yield Hit(
            f"Blob backup instance '{name}' is {what}",
            {
                "backupInstance": instance.instance_id,
                "policy": instance.policy_id,
                "dataStoreTypes": list(instance.datastore_types),
                "protectionState": instance.protection_state,
            },
            subject=name.lower(),
            severity=severity,
        )


RULE = Rule(
    id="azure-backup",
    title="Azure Backup protects a perimeter-protected account",
    severity=Severity.HIGH,
    sources=(BRIEF_2025_06, LEARN_2025_07),
    reason=(
        "Vaulted backups for Azure Blob Storage are not supported with network security perimeter (June "
        "2025); the July 2025 page says Azure Backup as a service is not onboarded to the perimeter yet. "
        "Vaulted backup copies data out to a vault (high); operational backup stays in the account (low)."
    ),
    remediation=(
        "Stop protection for the blob backup instance (or switch its policy to operational-only), or take "
        "the account out of the perimeter if vaulted backup is required."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES | {TargetKind.BACKUP_INSTANCE},
    references=frozenset({TargetKind.BACKUP_INSTANCE}),
    evidence="each blob backup instance (policy, data stores)",
)
