"""cmk-vault-outside-perimeter: the customer-managed key vault and the perimeter."""

from __future__ import annotations

import pytest

from shared.core.model import Encryption, ProvisioningIssue, Severity
from tests import estate_builder as eb
from tests.rule_helpers import ACCOUNT, CMK, NAME, OTHER_NSP, VAULT_MEMBER, config_body, details, of, read, snap, view
from tests.sample_estate import NSP_ID


def test_cmk_vault_not_associated() -> None:
    snapshot = read(eb.member(NAME, "cmk"), eb.perimeter(NAME))
    (finding,) = of(snapshot, "cmk-vault-outside-perimeter")
    assert finding.severity is Severity.HIGH
    assert eb.EXAMPLE_VAULT in finding.summary and "not associated" in finding.summary
    assert details(finding)["vaultAssociated"] is False
    assert details(finding)["keyVaultUri"] == "https://myvault8569.vault.azure.net"
    assert finding.subjects == (NSP_ID.lower(),)


def test_cmk_vault_associated_is_clean() -> None:
    snapshot = read(eb.member(NAME, "cmk"), eb.perimeter(NAME, vaults=[eb.EXAMPLE_VAULT]))
    assert VAULT_MEMBER in (snapshot.perimeters[0].perimeter_members or ())
    assert of(snapshot, "cmk-vault-outside-perimeter") == []


def test_cmk_vault_membership_unknown_when_the_perimeter_cannot_be_listed() -> None:
    snapshot = read(eb.member(NAME, "cmk"))  # no perimeter resources in the estate
    (finding,) = of(snapshot, "cmk-vault-outside-perimeter")
    assert details(finding)["vaultAssociated"] is None
    assert "could not be read" in finding.summary


def test_cmk_vault_associated_but_named_by_a_provisioning_issue() -> None:
    resources = eb.merge(eb.member(NAME, "cmk", issues=True), eb.perimeter(NAME, vaults=[eb.EXAMPLE_VAULT]))
    issue = config_body(resources)["properties"]["provisioningIssues"][0]
    issue["properties"]["suggestedResourceIds"] = [eb.vault_id(eb.EXAMPLE_VAULT)]
    snapshot = read(resources)
    (finding,) = of(snapshot, "cmk-vault-outside-perimeter")
    assert details(finding)["vaultAssociated"] is True
    assert details(finding)["provisioningIssues"] == ["ConfigurationPropagationFailure"]
    assert "provisioning issue" in finding.summary


def test_cmk_negative_without_customer_managed_key() -> None:
    snapshot = read(eb.member(NAME), eb.perimeter(NAME))
    assert snapshot.perimeters[0].perimeter_members is None  # no CMK: the members are not read
    assert of(snapshot, "cmk-vault-outside-perimeter") == []


@pytest.mark.parametrize(
    ("members", "issues", "expected"),
    [
        ((ACCOUNT.lower(), VAULT_MEMBER), (), None),
        ((ACCOUNT.lower(),), (), "not associated"),
        (None, (), "could not be read"),
        (
            (VAULT_MEMBER,),
            (
                ProvisioningIssue(
                    "MissingKv", "MissingPerimeterConfiguration", "Warning", f"Vault {eb.EXAMPLE_VAULT} ..."
                ),
            ),
            "provisioning issue",
        ),
        (
            (VAULT_MEMBER,),
            (ProvisioningIssue("Other", "Other", "Warning", "unrelated resource kv-other"),),
            None,
        ),
    ],
    ids=["associated", "not-associated", "membership-unknown", "issue-names-vault", "issue-not-about-vault"],
)
def test_cmk_vault_matrix(
    members: tuple[str, ...] | None, issues: tuple[ProvisioningIssue, ...], expected: str | None
) -> None:
    findings = of(snap(view(members=members, issues=issues), encryption=CMK), "cmk-vault-outside-perimeter")
    if expected is None:
        assert findings == []
    else:
        (finding,) = findings
        assert expected in finding.summary and eb.EXAMPLE_VAULT in finding.summary


def test_cmk_one_finding_per_perimeter_lacking_the_vault() -> None:
    inside = view(members=(VAULT_MEMBER,))
    outside = view(members=(), perimeter=OTHER_NSP)
    (finding,) = of(snap(inside, outside, encryption=CMK), "cmk-vault-outside-perimeter")
    assert finding.perimeter_id == OTHER_NSP and finding.subjects == (OTHER_NSP.lower(),)


def test_cmk_needs_a_vault_uri() -> None:
    no_uri = Encryption("Microsoft.Keyvault", "", "k")
    assert of(snap(view(members=()), encryption=no_uri), "cmk-vault-outside-perimeter") == []
