"""perimeter-provisioning-issue: provisioning issues of the NSP configuration."""

from __future__ import annotations

import pytest

from shared.core.model import ProvisioningIssue, Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, config_body, details, of, read, snap, view
from tests.sample_estate import NSP_GUID


def test_provisioning_issue_from_the_official_2025_06_01_example_is_high() -> None:
    (finding,) = of(read(eb.member(NAME, issues=True)), "perimeter-provisioning-issue")
    assert finding.severity is Severity.HIGH
    assert "ConfigurationPropagationFailure" in finding.summary
    assert "Failed to update Network Security Perimeter association." in finding.summary
    assert details(finding)["issueSeverity"] == "Error"
    assert finding.subjects == (f"{NSP_GUID}.assoc-{NAME}/configurationpropagationfailure",)


def test_provisioning_issue_warning_is_medium() -> None:
    resources = eb.member(NAME, issues=True)
    config_body(resources)["properties"]["provisioningIssues"][0]["properties"]["severity"] = "Warning"
    (finding,) = of(read(resources), "perimeter-provisioning-issue")
    assert finding.severity is Severity.MEDIUM


def test_provisioning_failed_state_without_issues() -> None:
    resources = eb.member(NAME)
    config_body(resources)["properties"]["provisioningState"] = "Failed"
    (finding,) = of(read(resources), "perimeter-provisioning-issue")
    assert "provisioning state Failed" in finding.summary


def test_provisioning_issue_negative() -> None:
    assert of(read(eb.member(NAME)), "perimeter-provisioning-issue") == []


@pytest.mark.parametrize(
    ("level", "severity"), [("Error", Severity.HIGH), ("error", Severity.HIGH), ("Warning", Severity.MEDIUM)]
)
def test_provisioning_issue_severity(level: str, severity: Severity) -> None:
    issue = ProvisioningIssue("i1", "ConfigurationPropagationFailure", level, "boom")
    (finding,) = of(snap(view(issues=(issue,))), "perimeter-provisioning-issue")
    assert finding.severity is severity
