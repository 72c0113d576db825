from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, Hit, Rule, RuleParams


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    enabled = [rule.name for rule in account.lifecycle_rules if rule.enabled]
    if enabled:
        yield Hit(
            f"Lifecycle management policy has {len(enabled)} enabled rule(s)",
            {"enabledRules": enabled},
        )


RULE = Rule(
    id="lifecycle-management",
    title="Lifecycle management policy on a perimeter-protected account",
    severity=Severity.MEDIUM,
    sources=(BRIEF_2025_06,),
    reason=(
        "Lifecycle management for Blob Storage is listed as unsupported with network security perimeter "
        "(June 2025 page; the July 2025 page no longer lists it, so it is kept and configurable)."
    ),
    remediation=(
        "Disable or delete the lifecycle management policy (managementPolicies/default), or accept the "
        "risk with a time-limited suppression once Microsoft confirms support."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES,  # the account's own properties: its own change or a sweep
    evidence="the enabled lifecycle rules",
)
