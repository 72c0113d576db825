"""The rule catalogue: an explicit tuple, in the order the catalogue is printed."""

from shared.rules import (
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
from shared.rules.base import Rule, RuleParams

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

__all__ = ["ALL_RULES", "RULES_BY_ID", "Rule", "RuleParams"]
