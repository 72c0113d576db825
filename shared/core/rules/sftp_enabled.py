from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, LEARN_2025_07, Hit, Rule, RuleParams


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    if account.is_sftp_enabled:
        yield Hit(
            "SFTP is enabled on an account inside a network security perimeter",
            {"isSftpEnabled": True, "isLocalUserEnabled": account.is_local_user_enabled},
        )


RULE = Rule(
    id="sftp-enabled",
    title="SFTP enabled on a perimeter-protected account",
    severity=Severity.HIGH,
    sources=(BRIEF_2025_06, LEARN_2025_07),
    reason=(
        "SSH File Transfer Protocol over Blob Storage is not supported by network security perimeter: "
        "all protocols other than HTTPS are outside the perimeter's control, so SFTP is a path around "
        "its access rules (data exfiltration risk)."
    ),
    remediation=(
        "Disable SFTP (properties.isSftpEnabled = false, e.g. `az storage account update --enable-sftp "
        "false`) or move the workload to an account outside the perimeter reached over a private endpoint."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES,  # the account's own properties: its own change or a sweep
    evidence="the account's SFTP and local-user settings",
)
