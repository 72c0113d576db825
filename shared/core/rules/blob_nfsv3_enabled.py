from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, LEARN_2025_07, Hit, Rule, RuleParams


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    if account.is_nfs_v3_enabled:
        yield Hit(
            "Blob NFS 3.0 is enabled on an account inside a network security perimeter",
            {"isNfsV3Enabled": True, "isHnsEnabled": account.is_hns_enabled},
        )


RULE = Rule(
    id="blob-nfsv3-enabled",
    title="Blob NFS 3.0 enabled on a perimeter-protected account",
    severity=Severity.HIGH,
    sources=(BRIEF_2025_06, LEARN_2025_07),
    reason=(
        "Network file system (NFS) protocol with Azure Blob Storage is not supported by network security "
        "perimeter; NFS traffic is not governed by the perimeter's access rules."
    ),
    remediation=(
        "NFS 3.0 cannot be turned off after account creation: move NFS workloads to a separate account "
        "outside the perimeter (reached through a private endpoint) and dissociate or replace this account."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES,  # the account's own properties: its own change or a sweep
    evidence="the account's NFS 3.0 and hierarchical-namespace settings",
)
