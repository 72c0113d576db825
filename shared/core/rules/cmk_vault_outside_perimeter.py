from __future__ import annotations

from collections.abc import Iterator

from shared.core.changes import ACCOUNT_CHANGES, TargetKind
from shared.core.model import PerimeterView, Severity, StorageAccountSnapshot
from shared.core.rules.base import BRIEF_2025_06, LEARN_2025_07, Hit, Rule, RuleParams


def _vault_is_member(view: PerimeterView, vault_name: str) -> bool | None:
    if view.perimeter_members is None:
        return None
    suffix = f"/providers/microsoft.keyvault/vaults/{vault_name}"
    return any(member.endswith(suffix) for member in view.perimeter_members)


def _issues_naming_vault(view: PerimeterView, vault_name: str) -> list[str]:
    named = []
    for issue in view.provisioning_issues:
        texts = [issue.description, *issue.suggested_resource_ids]
        if any(vault_name in text.lower() for text in texts):
            named.append(issue.name)
    return named


def check(account: StorageAccountSnapshot, params: RuleParams) -> Iterator[Hit]:
    if not account.encryption.uses_customer_managed_key:
        return
    vault = account.encryption.key_vault_name
    for view in account.perimeters:
        member = _vault_is_member(view, vault)
        issues = _issues_naming_vault(view, vault)
        if member is True and not issues:
            continue
        if member is None:
            why = "its membership of the perimeter could not be read"
        elif not member:
            why = "it is not associated with the account's perimeter"
        else:
            why = "the perimeter configuration reports a provisioning issue for it"
        yield Hit(
            f"Key Vault '{vault}' holding the account's key is unreachable from the perimeter: {why}",
            {
                "keyVaultUri": account.encryption.key_vault_uri,
                "keyName": account.encryption.key_name,
                "perimeter": view.perimeter_id,
                "vaultAssociated": member,
                "provisioningIssues": issues,
            },
            subject=view.perimeter_id.lower(),
            perimeter_id=view.perimeter_id,
        )


RULE = Rule(
    id="cmk-vault-outside-perimeter",
    title="Customer-managed key vault not reachable from the perimeter",
    severity=Severity.HIGH,
    sources=(BRIEF_2025_06, LEARN_2025_07),
    reason=(
        "For storage accounts associated with a network security perimeter, customer-managed keys only work "
        "if the Azure Key Vault is accessible from within the perimeter the account is associated with; "
        "otherwise key wrap/unwrap fails and the account's data becomes unavailable."
    ),
    remediation=(
        "Associate the Key Vault with the same perimeter (a resource association on the perimeter, e.g. in "
        "the account's profile), or move the key to a vault that is; then reconcile the configuration."
    ),
    check=check,
    judged_by=ACCOUNT_CHANGES | {TargetKind.PERIMETER, TargetKind.KEY_VAULT},
    references=frozenset({TargetKind.PERIMETER, TargetKind.KEY_VAULT}),
    evidence="each perimeter that cannot reach the key vault",
)
