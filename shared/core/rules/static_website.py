from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import LEARN_2025_07, Hit, Rule, RuleParams


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    if account.static_website_enabled:
        yield Hit(
            "Static website hosting is enabled",
            {"blobServices/default.staticWebsite.enabled": True},
        )


RULE = Rule(
    id="static-website",
    title="Static website on a perimeter-protected account",
    severity=Severity.HIGH,
    sources=(LEARN_2025_07,),
    reason=(
        "Static website is not supported with network security perimeter (added by Microsoft's July 2025 "
        "page): the $web endpoint serves content anonymously, outside the perimeter's access rules."
    ),
    remediation=(
        "Disable static website on the blob service (`az storage blob service-properties update "
        "--static-website false`) and serve the content from an account outside the perimeter."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES,  # the account's own properties: its own change or a sweep
    evidence="the blob service's static website setting",
)
