from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES, TargetKind
from shared.core.model import Severity, StorageAccountSnapshot
from shared.core.rules.base import NSP_CONFIG_API, Hit, Rule, RuleParams


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    for view in account.perimeters:
        for issue in view.provisioning_issues:
            yield Hit(
                f"Perimeter configuration reports {issue.severity or 'an'} issue "
                f"'{issue.issue_type or issue.name}': {issue.description}",
                {
                    "configuration": view.configuration_name,
                    "issueType": issue.issue_type,
                    "issueSeverity": issue.severity,
                    "description": issue.description,
                    "suggestedResourceIds": list(issue.suggested_resource_ids),
                },
                subject=f"{view.configuration_name}/{issue.name}".lower(),
                severity=Severity.HIGH if issue.severity.lower() == "error" else Severity.MEDIUM,
                perimeter_id=view.perimeter_id,
            )
        if view.provisioning_state.lower() == "failed" and not view.provisioning_issues:
            yield Hit(
                "Perimeter configuration is in provisioning state Failed",
                {"configuration": view.configuration_name, "provisioningState": view.provisioning_state},
                subject=f"{view.configuration_name}/provisioningstate".lower(),
                perimeter_id=view.perimeter_id,
            )


RULE = Rule(
    id="perimeter-provisioning-issue",
    title="Perimeter configuration has provisioning issues",
    severity=Severity.MEDIUM,
    sources=(NSP_CONFIG_API,),
    reason=(
        "The storage account's networkSecurityPerimeterConfigurations report provisioning issues (e.g. "
        "ConfigurationPropagationFailure): the effective rules may not be the ones the perimeter declares."
    ),
    remediation=(
        "Read the issue's description and suggested resources, fix the association or rules, then run the "
        "configuration's reconcile action (POST .../networkSecurityPerimeterConfigurations/{name}/reconcile)."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES | {TargetKind.PERIMETER},
    references=frozenset({TargetKind.PERIMETER}),
    evidence="each provisioning issue of the NSP configuration",
)
