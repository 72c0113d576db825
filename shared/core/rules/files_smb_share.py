from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shared.core.changes import ACCOUNT_CHANGES
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, LEARN_2025_07, Hit, Rule, RuleParams, quoted


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for share in account.file_shares:
        if not share.is_nfs:
            yield Hit(
                f"Azure Files share '{share.name}' is reachable over SMB",
                {
                    "share": share.name,
                    "enabledProtocols": share.enabled_protocols or "SMB",
                    "ipRules": list(account.network_acls.ip_rules),
                },
                subject=share.name,
            )


def summarize(items: Sequence[Mapping[str, Any]]) -> str:
    shares = quoted((item.get("share") for item in items), shown=10)
    return f"{len(items)} Azure Files shares are reachable over SMB: {shares}"


RULE = Rule(
    id="files-smb-share",
    title="Azure Files SMB share on a perimeter-protected account",
    severity=Severity.MEDIUM,
    sources=(BRIEF_2025_06, LEARN_2025_07),
    reason=(
        "Server message block (SMB) with Azure Files can only be restricted through IP allowlisting: the "
        "perimeter's access rules do not apply to SMB traffic."
    ),
    remediation=(
        "Serve SMB from an account outside the perimeter over a private endpoint, or restrict it with the "
        "account firewall's IP rules and accept the documented gap (suppress this rule for the account "
        "with a reason and an expiry)."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES,  # the account's own properties: its own change or a sweep
    evidence="each SMB file share (with the account's IP rules)",
    summarize=summarize,
)
