from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shared.core.changes import ACCOUNT_CHANGES
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, LEARN_2025_07, Hit, Rule, RuleParams


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for policy in account.object_replication_policies:
        yield Hit(
            f"Object replication policy {policy.policy_id} copies blobs "
            f"from '{policy.source_account}' to '{policy.destination_account}'",
            {
                "policyId": policy.policy_id,
                "sourceAccount": policy.source_account,
                "destinationAccount": policy.destination_account,
                "rules": policy.rule_count,
                "allowCrossTenantReplication": account.allow_cross_tenant_replication,
            },
            subject=policy.policy_id,
        )


def summarize(items: Sequence[Mapping[str, Any]]) -> str:
    pairs = [f"'{item.get('sourceAccount')}' to '{item.get('destinationAccount')}'" for item in items]
    return f"{len(items)} object replication policies copy blobs: " + ", ".join(pairs)


RULE = Rule(
    id="object-replication",
    title="Object replication on a perimeter-protected account",
    severity=Severity.HIGH,
    sources=(BRIEF_2025_06, LEARN_2025_07),
    reason=(
        "Object replication is not supported with network security perimeter: it copies data to another "
        "account outside the perimeter's control (the platform refuses new policies once associated, so "
        "a policy here predates the association or raced it)."
    ),
    remediation=(
        "Delete the object replication policies on both source and destination accounts (`az storage "
        "account or-policy delete`), or take the account out of the perimeter if replication is required."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES,  # the account's own properties: its own change or a sweep
    evidence="each replication policy (source and destination account)",
    summarize=summarize,
)
