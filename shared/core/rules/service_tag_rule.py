from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES, TargetKind
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import SERVICE_TAGS_2026_10, Hit, Rule, RuleParams, inbound_rules


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for view in account.perimeters:
        for rule in inbound_rules(view):
            if rule.service_tags:
                yield Hit(
                    f"Inbound rule '{rule.name}' of profile '{view.profile_name}' relies on service tags "
                    f"{', '.join(rule.service_tags)}, which Azure Storage does not honour",
                    {
                        "profile": view.profile_name,
                        "accessRule": rule.name,
                        "serviceTags": list(rule.service_tags),
                    },
                    subject=f"{view.profile_name}/{rule.name}".lower(),
                    perimeter_id=view.perimeter_id,
                )


RULE = Rule(
    id="service-tag-rule",
    title="Service-tag inbound rule (not honoured by Azure Storage)",
    severity=Severity.MEDIUM,
    sources=(SERVICE_TAGS_2026_10,),
    reason=(
        "Azure Storage currently doesn't support service tags as inbound access rules: the rule gives a "
        "false sense of coverage (callers it is meant to admit are denied, and reviewers assume they are)."
    ),
    remediation=(
        "Replace the service-tag rule with subscription-based or address-prefix rules for the callers that "
        "need access to the storage account, or put those callers in the perimeter."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES | {TargetKind.PERIMETER},
    references=frozenset({TargetKind.PERIMETER}),
    evidence="each service-tag inbound access rule",
)
