from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shared.core.changes import ACCOUNT_CHANGES
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, LEARN_2025_07, Hit, Rule, RuleParams, quoted


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for share in account.file_shares:
        if share.is_nfs:
            yield Hit(
                f"Azure Files share '{share.name}' uses NFS",
                {"share": share.name, "enabledProtocols": share.enabled_protocols},
                subject=share.name,
            )


def summarize(items: Sequence[Mapping[str, Any]]) -> str:
    shares = quoted((item.get("share") for item in items), shown=10)
    return f"{len(items)} Azure Files shares use NFS: {shares}"


RULE = Rule(
    id="files-nfs-share",
    title="Azure Files NFS share on a perimeter-protected account",
    severity=Severity.HIGH,
    sources=(BRIEF_2025_06, LEARN_2025_07),
    reason=(
        "Network file system (NFS) protocol with Azure Files is not supported by network security "
        "perimeter: only HTTPS-based access is governed by it."
    ),
    remediation=(
        "Move NFS shares (enabledProtocols = NFS is fixed at creation) to an account outside the "
        "perimeter reached over a private endpoint, then delete them here."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES,  # the account's own properties: its own change or a sweep
    evidence="each NFS file share",
    summarize=summarize,
)
