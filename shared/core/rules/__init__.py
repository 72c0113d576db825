"""The rule catalogue: an explicit tuple, in the order the catalogue is printed, and what each
change kind may judge (asked of the rules themselves: ``Rule.judged_by``)."""

from shared.core.changes import TargetKind
from shared.core.rules import (
    association_not_enforced,
    azure_backup,
    blob_inventory,
    blob_nfsv3_enabled,
    cmk_vault_outside_perimeter,
    files_nfs_share,
    files_smb_share,
    inbound_rule_too_broad,
    lifecycle_management,
    object_replication,
    perimeter_provisioning_issue,
    service_tag_rule,
    sftp_enabled,
    static_website,
    subscription_rule,
    unmanaged_disk,
)
from shared.core.rules.base import Rule, RuleParams

ALL_RULES: tuple[Rule, ...] = (
    sftp_enabled.RULE,
    blob_nfsv3_enabled.RULE,
    files_nfs_share.RULE,
    files_smb_share.RULE,
    object_replication.RULE,
    lifecycle_management.RULE,
    blob_inventory.RULE,
    static_website.RULE,
    unmanaged_disk.RULE,
    azure_backup.RULE,
    cmk_vault_outside_perimeter.RULE,
    perimeter_provisioning_issue.RULE,
    association_not_enforced.RULE,
    inbound_rule_too_broad.RULE,
    service_tag_rule.RULE,
    subscription_rule.RULE,
)

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in ALL_RULES}


def judged_by(kind: TargetKind) -> frozenset[str] | None:
    """The ids of the rules an evaluation caused by a change of ``kind`` may open or resolve;
    None when it may judge every rule (unscoped: it may also resolve everything of a deleted
    account). The findings of the other rules are carried over untouched (``shared.core.drift``)."""
    ids = frozenset(rule.id for rule in ALL_RULES if kind in rule.judged_by)
    return None if len(ids) == len(ALL_RULES) else ids


__all__ = ["ALL_RULES", "RULES_BY_ID", "Rule", "RuleParams", "judged_by"]
