"""azure-backup: Azure Backup protecting the account."""

from __future__ import annotations

import pytest

from shared.core.model import Severity
from tests import estate_builder as eb
from tests.rule_helpers import NAME, details, of, read


@pytest.mark.parametrize(
    ("store", "severity", "words"),
    [
        ("VaultStore", Severity.HIGH, "vaulted backup"),
        ("OperationalStore", Severity.LOW, "operational backup"),
    ],
)
def test_azure_backup_positive(store: str, severity: Severity, words: str) -> None:
    snapshot = read(eb.member(NAME), eb.backup_instance(NAME, "pol", "bi1"), eb.backup_policy("pol", store))
    (finding,) = of(snapshot, "azure-backup")
    assert finding.severity is severity
    assert words in finding.summary
    assert finding.subjects == ("bi1",)
    assert details(finding)["dataStoreTypes"] == [store]
    assert snapshot.incomplete == ()


def test_azure_backup_policy_unreadable_is_medium_and_partial() -> None:
    snapshot = read(eb.member(NAME), eb.backup_instance(NAME, "gone", "bi1"))
    (finding,) = of(snapshot, "azure-backup")
    assert finding.severity is Severity.MEDIUM
    assert "could not be read" in finding.summary
    assert snapshot.incomplete == ("backupPolicies",)


def test_azure_backup_negative() -> None:
    other = eb.backup_instance("stother01", "pol", "bi-other")
    assert of(read(eb.member(NAME), other, eb.backup_policy("pol", "VaultStore")), "azure-backup") == []
    assert of(read(eb.member(NAME)), "azure-backup") == []
