from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, Hit, Rule, RuleParams


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    policy = account.inventory_policy
    if policy is None or not policy.enabled:
        return
    enabled = [rule for rule in policy.rules if rule.enabled]
    if enabled:
        yield Hit(
            f"Blob inventory policy is enabled with {len(enabled)} active rule(s)",
            {
                "enabledRules": [rule.name for rule in enabled],
                "destinations": sorted({rule.destination for rule in enabled}),
            },
        )


RULE = Rule(
    id="blob-inventory",
    title="Blob inventory on a perimeter-protected account",
    severity=Severity.MEDIUM,
    sources=(BRIEF_2025_06,),
    reason=(
        "Azure Blob Inventory is listed as unsupported with network security perimeter (June 2025 page); "
        "inventory runs write reports through a path the perimeter does not govern."
    ),
    remediation="Disable the blob inventory policy (inventoryPolicies/default, policy.enabled = false).",
    check=check,
    judged_by=ACCOUNT_CHANGES,  # the account's own properties: its own change or a sweep
    evidence="the enabled inventory rules and their destinations",
)
