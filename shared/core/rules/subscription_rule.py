from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES, TargetKind
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, Hit, Rule, RuleParams, inbound_rules


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for view in account.perimeters:
        for rule in inbound_rules(view):
            if rule.subscriptions:
                yield Hit(
                    f"Inbound rule '{rule.name}' of profile '{view.profile_name}' admits every resource in "
                    f"{len(rule.subscriptions)} subscription(s)",
                    {
                        "profile": view.profile_name,
                        "accessRule": rule.name,
                        "subscriptions": list(rule.subscriptions),
                    },
                    subject=f"{view.profile_name}/{rule.name}".lower(),
                    perimeter_id=view.perimeter_id,
                )


RULE = Rule(
    id="subscription-rule",
    title="Subscription-based inbound rule",
    severity=Severity.MEDIUM,
    sources=(BRIEF_2025_06,),
    reason=(
        "With a subscription-based access rule, all resources within that subscription are given access "
        "to the perimeter: every managed identity and service there can reach the account."
    ),
    remediation=(
        "Prefer associating the calling resources with the perimeter (or a linked perimeter); if a "
        "subscription rule is needed, scope it to a dedicated subscription and suppress with a reason."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES | {TargetKind.PERIMETER},
    references=frozenset({TargetKind.PERIMETER}),
    evidence="each subscription-based inbound access rule",
)
