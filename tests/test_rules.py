"""The sixteen rules, the evaluation around them and the rules configuration.

Realistic cases read an estate built from the official Azure REST API examples through the real
reader (``tests/estate_builder.py``); edge cases the examples cannot express use hand-built
snapshots. Every rule has at least one positive and one negative case.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import (
    ConfigError,
    RuleOverride,
    RulesConfig,
    Suppression,
    config_from_settings,
    load_config_file,
    parse_config,
)
from shared.evaluate import evaluate
from shared.model import (
    AccessMode,
    AccessRule,
    BackupInstance,
    Encryption,
    Evaluation,
    FileShare,
    Finding,
    InventoryPolicy,
    InventoryRule,
    LifecycleRule,
    ObjectReplicationPolicy,
    PerimeterView,
    ProvisioningIssue,
    Severity,
    StorageAccountSnapshot,
    UnmanagedDisk,
)
from shared.rules import ALL_RULES, RULES_BY_ID
from shared.rules.base import RuleParams
from tests import estate_builder as eb
from tests.sample_estate import NSP_GUID, NSP_ID, PARTNER_SUB, RG_DATA, SUB, account_id

TODAY = date(2026, 6, 1)
NAME = "stprobe01"
ACCOUNT = account_id(NAME)
OTHER_NSP = NSP_ID.replace("nsp-contoso-data", "nsp-contoso-other")

EXPECTED_IDS = {
    "sftp-enabled",
    "blob-nfsv3-enabled",
    "files-nfs-share",
    "files-smb-share",
    "object-replication",
    "lifecycle-management",
    "blob-inventory",
    "static-website",
    "unmanaged-disk",
    "azure-backup",
    "cmk-vault-outside-perimeter",
    "perimeter-provisioning-issue",
    "association-not-enforced",
    "inbound-rule-too-broad",
    "service-tag-rule",
    "subscription-rule",
}


# -- helpers ----------------------------------------------------------------------------------------


def run(snapshot: StorageAccountSnapshot, config: RulesConfig | None = None, today: date = TODAY) -> Evaluation:
    return evaluate(snapshot, config or RulesConfig(), today)


def of(snapshot: StorageAccountSnapshot, rule_id: str, config: RulesConfig | None = None) -> list[Finding]:
    assert rule_id in RULES_BY_ID
    return [f for f in run(snapshot, config).findings if f.rule_id == rule_id]


def read(*parts: dict[str, Any], name: str = NAME) -> StorageAccountSnapshot:
    snapshot, _ = eb.read(eb.merge(*parts), name)
    return snapshot


def config_body(resources: dict[str, Any], name: str = NAME) -> dict[str, Any]:
    (body,) = [
        b for k, b in resources.items() if f"/storageAccounts/{name}/networkSecurityPerimeterConfigurations/" in k
    ]
    return body


def view(
    *rules: AccessRule,
    mode: str = "Enforced",
    issues: tuple[ProvisioningIssue, ...] = (),
    members: tuple[str, ...] | None = None,
    perimeter: str = NSP_ID,
    state: str = "Succeeded",
    profile: str = "profile-x",
) -> PerimeterView:
    return PerimeterView(
        configuration_name=f"{NSP_GUID}.assoc-{NAME}",
        perimeter_id=perimeter,
        perimeter_guid=NSP_GUID,
        location="eastus",
        association_name=f"assoc-{NAME}",
        access_mode=AccessMode.parse(mode),
        access_mode_raw=mode,
        profile_name=profile,
        access_rules_version=1,
        access_rules=rules,
        provisioning_state=state,
        provisioning_issues=issues,
        perimeter_members=members,
    )


def snap(*views: PerimeterView, **fields: Any) -> StorageAccountSnapshot:
    return StorageAccountSnapshot(
        id=ACCOUNT,
        name=NAME,
        subscription_id=SUB,
        resource_group=RG_DATA,
        kind="StorageV2",
        perimeters=views if views else (view(),),
        **fields,
    )


def inbound(name: str = "rule1", **kw: Any) -> AccessRule:
    return AccessRule(name=name, direction="Inbound", **kw)


def outbound(name: str = "rule1", **kw: Any) -> AccessRule:
    return AccessRule(name=name, direction="Outbound", **kw)


CMK = Encryption("Microsoft.Keyvault", f"https://{eb.EXAMPLE_VAULT}.vault.azure.net", "wrappingKey")
VAULT_MEMBER = eb.vault_id(eb.EXAMPLE_VAULT).lower()


# -- the catalogue ---------------------------------------------------------------------------------


def test_catalogue_is_exactly_the_sixteen_documented_ids() -> None:
    ids = [rule.id for rule in ALL_RULES]
    assert len(ids) == len(set(ids)) == 16
    assert set(ids) == EXPECTED_IDS
    assert set(RULES_BY_ID) == EXPECTED_IDS
    assert all(RULES_BY_ID[rule.id] is rule for rule in ALL_RULES)


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.id)
def test_every_rule_is_documented(rule: Any) -> None:
    for text in (rule.id, rule.title, rule.reason, rule.remediation):
        assert isinstance(text, str) and text.strip(), rule.id
    assert rule.id == rule.id.lower() and " " not in rule.id
    assert isinstance(rule.severity, Severity)
    assert rule.sources, f"{rule.id} cites no source"
    for source in rule.sources:
        assert source.document.strip()
        assert date.fromisoformat(source.date) <= date(2027, 1, 1)
        assert source.url.startswith("https://learn.microsoft.com/")
    entry = rule.catalogue_entry()
    assert entry["id"] == rule.id and entry["severity"] == rule.severity.label
    assert all(s["date"] for s in entry["sources"])
    assert callable(rule.check)


# -- sftp-enabled ------------------------------------------------------------------------------------


def test_sftp_enabled_positive() -> None:
    snapshot = read(eb.member(NAME, isSftpEnabled=True, isLocalUserEnabled=True))
    (finding,) = of(snapshot, "sftp-enabled")
    assert finding.severity is Severity.HIGH
    assert finding.resource_id == ACCOUNT and finding.account_name == NAME
    assert finding.perimeter_id == NSP_ID
    assert finding.evidence == {"isSftpEnabled": True, "isLocalUserEnabled": True}


def test_sftp_enabled_negative() -> None:
    assert of(read(eb.member(NAME)), "sftp-enabled") == []
    assert of(read(eb.member(NAME, isSftpEnabled=False)), "sftp-enabled") == []


# -- blob-nfsv3-enabled -----------------------------------------------------------------------------


def test_blob_nfsv3_positive_on_the_official_nfs_account() -> None:
    (finding,) = of(read(eb.member(NAME, "nfs")), "blob-nfsv3-enabled")
    assert finding.severity is Severity.HIGH
    assert finding.evidence == {"isNfsV3Enabled": True, "isHnsEnabled": True}


def test_blob_nfsv3_negative() -> None:
    assert of(read(eb.member(NAME)), "blob-nfsv3-enabled") == []
    assert of(read(eb.member(NAME, "nfs", isNfsV3Enabled=False)), "blob-nfsv3-enabled") == []


# -- files-nfs-share / files-smb-share ----------------------------------------------------------------


def test_files_nfs_share_positive() -> None:
    snapshot = read(eb.member(NAME), eb.nfs_share(NAME, "share-nfs"), eb.smb_share(NAME, "share-smb"))
    (finding,) = of(snapshot, "files-nfs-share")
    assert finding.subject == "share-nfs"
    assert finding.severity is Severity.HIGH
    assert finding.evidence == {"share": "share-nfs", "enabledProtocols": "NFS"}


def test_files_nfs_share_negative() -> None:
    assert of(read(eb.member(NAME), eb.smb_share(NAME)), "files-nfs-share") == []
    assert of(read(eb.member(NAME)), "files-nfs-share") == []


def test_files_smb_share_positive() -> None:
    snapshot = read(eb.member(NAME), eb.smb_share(NAME, "share-smb"), eb.nfs_share(NAME, "share-nfs"))
    (finding,) = of(snapshot, "files-smb-share")
    assert finding.subject == "share-smb"
    assert finding.severity is Severity.MEDIUM
    assert finding.evidence["enabledProtocols"] == "SMB"


def test_files_smb_share_negative() -> None:
    assert of(read(eb.member(NAME), eb.nfs_share(NAME)), "files-smb-share") == []
    assert of(read(eb.member(NAME)), "files-smb-share") == []


def test_shares_of_a_block_blob_account_are_not_judged() -> None:
    # BlockBlobStorage has no Azure Files endpoint: the reader does not list shares there.
    snapshot = read(eb.member(NAME, "nfs"), eb.smb_share(NAME))
    assert snapshot.file_shares == ()
    assert of(snapshot, "files-smb-share") == []


# -- object-replication ------------------------------------------------------------------------------


def test_object_replication_positive() -> None:
    findings = of(read(eb.member(NAME), eb.replication_policies(NAME)), "object-replication")
    assert {f.subject for f in findings} == {
        "c6c23999-fd4e-433a-bcf9-1db69d27cd8a",
        "141d23dc-8958-4b48-b6e6-5a40bf1af116",
    }
    assert {f.evidence["destinationAccount"] for f in findings} == {"destAccount1", "destAccount2"}
    assert all(f.evidence["sourceAccount"] == NAME and f.severity is Severity.HIGH for f in findings)


def test_object_replication_negative() -> None:
    assert of(read(eb.member(NAME)), "object-replication") == []


# -- lifecycle-management --------------------------------------------------------------------------


def test_lifecycle_management_positive() -> None:
    (finding,) = of(read(eb.member(NAME), eb.lifecycle_policy(NAME)), "lifecycle-management")
    assert finding.evidence == {"enabledRules": ["olcmtest"]}
    assert finding.severity is Severity.MEDIUM


def test_lifecycle_management_negative() -> None:
    assert of(read(eb.member(NAME), eb.lifecycle_policy(NAME, enabled=False)), "lifecycle-management") == []
    assert of(read(eb.member(NAME)), "lifecycle-management") == []


# -- blob-inventory ------------------------------------------------------------------------------------


def test_blob_inventory_positive() -> None:
    (finding,) = of(read(eb.member(NAME), eb.inventory_policy(NAME)), "blob-inventory")
    assert finding.evidence == {"enabledRules": ["inventoryPolicyRule1"], "destinations": ["container1"]}


@pytest.mark.parametrize(("policy_enabled", "rule_enabled"), [(False, True), (True, False)])
def test_blob_inventory_negative(policy_enabled: bool, rule_enabled: bool) -> None:
    parts = eb.inventory_policy(NAME, policy_enabled=policy_enabled, rule_enabled=rule_enabled)
    assert of(read(eb.member(NAME), parts), "blob-inventory") == []


def test_blob_inventory_negative_without_policy() -> None:
    assert of(read(eb.member(NAME)), "blob-inventory") == []


# -- static-website ------------------------------------------------------------------------------------


def test_static_website_positive() -> None:
    (finding,) = of(read(eb.member(NAME), eb.blob_service(NAME, static_website=True)), "static-website")
    assert finding.severity is Severity.HIGH


def test_static_website_negative() -> None:
    assert of(read(eb.member(NAME), eb.blob_service(NAME, static_website=False)), "static-website") == []
    assert of(read(eb.member(NAME)), "static-website") == []


# -- unmanaged-disk ------------------------------------------------------------------------------------


def test_unmanaged_disk_positive_for_each_vhd_of_the_official_vm() -> None:
    findings = of(read(eb.member(NAME), eb.legacy_vm(NAME)), "unmanaged-disk")
    assert sorted(f.subject for f in findings) == [
        "vm-legacy-app/datadisk0",
        "vm-legacy-app/datadisk1",
        "vm-legacy-app/myvmosdisk",
    ]
    os_disk = next(f for f in findings if f.subject.endswith("myvmosdisk"))
    assert "OS disk" in os_disk.summary
    assert os_disk.evidence["vhdUri"] == f"http://{NAME}.blob.core.windows.net/vhds/myDisk.vhd"


def test_unmanaged_disk_negative_when_the_vhds_live_in_another_account() -> None:
    # ``stprobe01x`` starts with this account's name: only the URI host decides.
    assert of(read(eb.member(NAME), eb.legacy_vm(f"{NAME}x")), "unmanaged-disk") == []
    assert of(read(eb.member(NAME)), "unmanaged-disk") == []


# -- azure-backup --------------------------------------------------------------------------------------


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
    assert finding.subject == "bi1"
    assert finding.evidence["dataStoreTypes"] == [store]
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


# -- cmk-vault-outside-perimeter ---------------------------------------------------------------------


def test_cmk_vault_not_associated() -> None:
    snapshot = read(eb.member(NAME, "cmk"), eb.perimeter(NAME))
    (finding,) = of(snapshot, "cmk-vault-outside-perimeter")
    assert finding.severity is Severity.HIGH
    assert eb.EXAMPLE_VAULT in finding.summary and "not associated" in finding.summary
    assert finding.evidence["vaultAssociated"] is False
    assert finding.evidence["keyVaultUri"] == "https://myvault8569.vault.azure.net"
    assert finding.subject == NSP_ID.lower()


def test_cmk_vault_associated_is_clean() -> None:
    snapshot = read(eb.member(NAME, "cmk"), eb.perimeter(NAME, vaults=[eb.EXAMPLE_VAULT]))
    assert VAULT_MEMBER in (snapshot.perimeters[0].perimeter_members or ())
    assert of(snapshot, "cmk-vault-outside-perimeter") == []


def test_cmk_vault_membership_unknown_when_the_perimeter_cannot_be_listed() -> None:
    snapshot = read(eb.member(NAME, "cmk"))  # no perimeter resources in the estate
    (finding,) = of(snapshot, "cmk-vault-outside-perimeter")
    assert finding.evidence["vaultAssociated"] is None
    assert "could not be read" in finding.summary


def test_cmk_vault_associated_but_named_by_a_provisioning_issue() -> None:
    resources = eb.merge(eb.member(NAME, "cmk", issues=True), eb.perimeter(NAME, vaults=[eb.EXAMPLE_VAULT]))
    issue = config_body(resources)["properties"]["provisioningIssues"][0]
    issue["properties"]["suggestedResourceIds"] = [eb.vault_id(eb.EXAMPLE_VAULT)]
    snapshot = read(resources)
    (finding,) = of(snapshot, "cmk-vault-outside-perimeter")
    assert finding.evidence["vaultAssociated"] is True
    assert finding.evidence["provisioningIssues"] == ["ConfigurationPropagationFailure"]
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
    assert finding.perimeter_id == OTHER_NSP and finding.subject == OTHER_NSP.lower()


def test_cmk_needs_a_vault_uri() -> None:
    no_uri = Encryption("Microsoft.Keyvault", "", "k")
    assert of(snap(view(members=()), encryption=no_uri), "cmk-vault-outside-perimeter") == []


# -- perimeter-provisioning-issue ------------------------------------------------------------------------


def test_provisioning_issue_from_the_official_2025_06_01_example_is_high() -> None:
    (finding,) = of(read(eb.member(NAME, issues=True)), "perimeter-provisioning-issue")
    assert finding.severity is Severity.HIGH
    assert "ConfigurationPropagationFailure" in finding.summary
    assert "Failed to update Network Security Perimeter association." in finding.summary
    assert finding.evidence["issueSeverity"] == "Error"
    assert finding.subject == f"{NSP_GUID}.assoc-{NAME}/configurationpropagationfailure"


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


# -- association-not-enforced ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "words"), [("Learning", "Learning/Transition"), ("Audit", "Audit mode")])
def test_association_not_enforced_positive(mode: str, words: str) -> None:
    (finding,) = of(read(eb.member(NAME, mode=mode)), "association-not-enforced")
    assert words in finding.summary
    assert finding.evidence["accessMode"] == mode
    assert finding.subject == f"assoc-{NAME}"
    assert finding.severity is Severity.MEDIUM


def test_association_enforced_is_clean() -> None:
    assert of(read(eb.member(NAME, mode="Enforced")), "association-not-enforced") == []


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("Learning", "Learning/Transition"),
        ("Transition", "Learning/Transition"),
        ("Audit", "Audit mode"),
        ("Enforced", None),
        ("enforced", None),
        ("Blocking", "unrecognised access mode 'Blocking'"),
        ("", "unrecognised access mode ''"),
    ],
)
def test_access_mode_matrix(mode: str, expected: str | None) -> None:
    findings = of(snap(view(mode=mode)), "association-not-enforced")
    if expected is None:
        assert findings == []
    else:
        (finding,) = findings
        assert expected in finding.summary


# -- inbound-rule-too-broad --------------------------------------------------------------------------


def test_inbound_rule_too_broad_on_the_official_prefixes() -> None:
    # The storage NSP configuration example's rule: 148.0.0.0/8 (too broad) and 152.4.6.0/24 (fine).
    (finding,) = of(read(eb.member(NAME, profile=eb.LEGACY)), "inbound-rule-too-broad")
    assert finding.severity is Severity.HIGH
    assert finding.evidence["broadPrefixes"] == ["148.0.0.0/8"]
    assert finding.subject == "profile-legacy/invpnrule"


def test_inbound_rule_too_broad_negative_on_private_prefixes() -> None:
    # profile-strict: 10.11.0.0/16 and 10.10.1.0/24 inbound, FQDNs outbound.
    assert of(read(eb.member(NAME, profile=eb.STRICT)), "inbound-rule-too-broad") == []


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("148.0.0.0/16", None),
        ("148.0.0.0/15", Severity.HIGH),
        ("0.0.0.0/0", Severity.CRITICAL),
        ("10.0.0.0/8", None),
        ("172.16.0.0/12", None),
        ("100.64.0.0/10", None),
        ("::/0", Severity.CRITICAL),
        ("2a01:110::/32", Severity.HIGH),
        ("2a01:110::/48", None),
        ("2a01:110::/47", Severity.HIGH),
        ("fc00::/7", None),
        ("not-a-prefix", None),
    ],
)
def test_inbound_prefix_edges(prefix: str, expected: Severity | None) -> None:
    findings = of(snap(view(inbound(address_prefixes=(prefix,)))), "inbound-rule-too-broad")
    if expected is None:
        assert findings == []
    else:
        (finding,) = findings
        assert finding.severity is expected
        assert finding.evidence["broadPrefixes"] == [prefix]


def test_inbound_everything_is_critical_even_next_to_a_narrow_prefix() -> None:
    rule = inbound(address_prefixes=("152.4.6.0/24", "0.0.0.0/0", "148.0.0.0/8"))
    (finding,) = of(snap(view(rule)), "inbound-rule-too-broad")
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["broadPrefixes"] == ["0.0.0.0/0", "148.0.0.0/8"]


def test_outbound_prefixes_are_not_inbound_rules() -> None:
    assert of(snap(view(outbound(address_prefixes=("0.0.0.0/0",)))), "inbound-rule-too-broad") == []


def test_prefix_limit_is_configurable() -> None:
    snapshot = snap(view(inbound(address_prefixes=("148.0.0.0/8", "152.4.0.0/20"))))
    narrow = parse_config({"rules": {"inbound-rule-too-broad": {"max_prefix_ipv4": 24}}})
    (finding,) = of(snapshot, "inbound-rule-too-broad", narrow)
    assert finding.evidence["broadPrefixes"] == ["148.0.0.0/8", "152.4.0.0/20"]
    assert finding.evidence["limitIPv4"] == "/24"
    wide = parse_config({"rules": {"inbound-rule-too-broad": {"max_prefix_ipv4": 8}}})
    assert of(snapshot, "inbound-rule-too-broad", wide) == []


# -- service-tag-rule / subscription-rule ------------------------------------------------------------------


def test_service_tag_rule_positive() -> None:
    (finding,) = of(read(eb.member(NAME, profile=eb.LEGACY)), "service-tag-rule")
    assert finding.evidence["serviceTags"] == ["DataFactory"]
    assert finding.subject == "profile-legacy/allow-adf-tag"


def test_service_tag_rule_negative() -> None:
    assert of(read(eb.member(NAME, profile=eb.STRICT)), "service-tag-rule") == []


def test_service_tag_rule_only_for_inbound() -> None:
    assert of(snap(view(outbound(service_tags=("Storage",)))), "service-tag-rule") == []
    assert len(of(snap(view(inbound(service_tags=("Storage",)))), "service-tag-rule")) == 1


def test_subscription_rule_positive() -> None:
    (finding,) = of(read(eb.member(NAME, profile=eb.LEGACY)), "subscription-rule")
    assert finding.evidence["subscriptions"] == [f"/subscriptions/{PARTNER_SUB}"]
    assert finding.subject == "profile-legacy/allowedsubscriptions"


def test_subscription_rule_negative() -> None:
    assert of(read(eb.member(NAME, profile=eb.STRICT)), "subscription-rule") == []
    assert of(snap(view(outbound(subscriptions=(f"/subscriptions/{PARTNER_SUB}",)))), "subscription-rule") == []


def test_outbound_fqdn_rules_trigger_no_inbound_rule() -> None:
    # The strict profile's outbound rule comes from the official NspAccessRuleGet example.
    snapshot = read(eb.member(NAME, profile=eb.STRICT))
    rules = snapshot.perimeters[0].access_rules
    assert any(not r.is_inbound and r.fully_qualified_domain_names for r in rules)
    assert run(snapshot).findings == ()
    fqdn = outbound(fully_qualified_domain_names=("paasrp1.contoso.org",))
    assert run(snap(view(fqdn))).findings == ()


# -- outside any perimeter --------------------------------------------------------------------------------


def everything_on(perimeters: tuple[PerimeterView, ...]) -> StorageAccountSnapshot:
    broad = inbound(
        "all",
        address_prefixes=("0.0.0.0/0",),
        subscriptions=(f"/subscriptions/{PARTNER_SUB}",),
        service_tags=("Storage",),
    )
    return StorageAccountSnapshot(
        id=ACCOUNT,
        name=NAME,
        subscription_id=SUB,
        resource_group=RG_DATA,
        is_sftp_enabled=True,
        is_nfs_v3_enabled=True,
        static_website_enabled=True,
        encryption=CMK,
        object_replication_policies=(ObjectReplicationPolicy("p1", NAME, "dest"),),
        lifecycle_rules=(LifecycleRule("r1", True),),
        inventory_policy=InventoryPolicy(True, (InventoryRule("i1", True, "c1"),)),
        file_shares=(FileShare("a", "NFS"), FileShare("b", "SMB")),
        unmanaged_disks=(UnmanagedDisk("/vm/x", "d", "http://x", True),),
        backup_instances=(
            BackupInstance("/bi/x", "Microsoft.Storage/storageAccounts/blobServices", "/p", "on", ("VaultStore",)),
        ),
        perimeters=tuple(
            replace(
                p,
                access_rules=(broad,),
                access_mode=AccessMode.AUDIT,
                access_mode_raw="Audit",
                provisioning_issues=(ProvisioningIssue("x", "x", "Error", "x"),),
            )
            for p in perimeters
        ),
    )


def test_every_rule_fires_on_an_account_with_every_feature_in_a_perimeter() -> None:
    # The control for the next test: the same account inside a perimeter triggers all sixteen.
    assert {f.rule_id for f in run(everything_on((view(members=()),))).findings} == EXPECTED_IDS


def test_account_outside_any_perimeter_has_no_findings_even_with_every_feature_on() -> None:
    evaluation = run(everything_on(()))
    assert evaluation.findings == () and evaluation.suppressed == ()


def test_account_outside_any_perimeter_read_from_the_examples() -> None:
    parts = eb.merge(
        eb.outsider(NAME, isSftpEnabled=True, isNfsV3Enabled=True),
        eb.nfs_share(NAME),
        eb.replication_policies(NAME),
        eb.lifecycle_policy(NAME),
        eb.inventory_policy(NAME),
        eb.blob_service(NAME, static_website=True),
        eb.legacy_vm(NAME),
        eb.backup_instance(NAME, "pol"),
        eb.backup_policy("pol", "VaultStore"),
    )
    snapshot = read(parts)
    assert snapshot.is_sftp_enabled and not snapshot.in_perimeter
    assert run(snapshot).findings == ()


# -- configuration: overrides ----------------------------------------------------------------------------


def legacy_snapshot() -> StorageAccountSnapshot:
    return read(eb.member(NAME, profile=eb.LEGACY, mode="Learning", isSftpEnabled=True))


def test_disabling_a_rule_drops_only_its_findings() -> None:
    snapshot = legacy_snapshot()
    before = {f.rule_id for f in run(snapshot).findings}
    assert {"sftp-enabled", "subscription-rule", "association-not-enforced"} <= before
    config = RulesConfig(overrides={"sftp-enabled": RuleOverride(enabled=False)})
    after = {f.rule_id for f in run(snapshot, config).findings}
    assert after == before - {"sftp-enabled"}


def test_severity_override_applies_even_over_a_per_hit_severity() -> None:
    config = parse_config(
        {"rules": {"sftp-enabled": {"severity": "low"}, "inbound-rule-too-broad": {"severity": "medium"}}}
    )
    (sftp,) = of(legacy_snapshot(), "sftp-enabled", config)
    assert sftp.severity is Severity.LOW
    critical = snap(view(inbound(address_prefixes=("0.0.0.0/0",))))
    assert of(critical, "inbound-rule-too-broad")[0].severity is Severity.CRITICAL
    assert of(critical, "inbound-rule-too-broad", config)[0].severity is Severity.MEDIUM


# -- configuration: suppressions -------------------------------------------------------------------------


def suppress(resource: str, expires: date, rule: str = "sftp-enabled") -> RulesConfig:
    return RulesConfig(suppressions=(Suppression(rule, resource, expires, "vendor SFTP drop until Q3"),))


@pytest.mark.parametrize("resource", [NAME, NAME.upper(), ACCOUNT, ACCOUNT.lower()])
def test_active_suppression_moves_the_finding(resource: str) -> None:
    evaluation = run(legacy_snapshot(), suppress(resource, date(2026, 9, 30)))
    assert "sftp-enabled" not in {f.rule_id for f in evaluation.findings}
    (hidden,) = evaluation.suppressed
    assert hidden.rule_id == "sftp-enabled"
    assert hidden.suppression_note == "suppressed until 2026-09-30: vendor SFTP drop until Q3"
    assert "subscription-rule" in {f.rule_id for f in evaluation.findings}


def test_suppression_is_active_on_its_expiry_day() -> None:
    evaluation = run(legacy_snapshot(), suppress(NAME, TODAY))
    assert [f.rule_id for f in evaluation.suppressed] == ["sftp-enabled"]


def test_suppression_for_another_account_or_rule_does_not_apply() -> None:
    for config in (
        suppress("stother01", date(2026, 9, 30)),
        suppress(NAME, date(2026, 9, 30), rule="blob-inventory"),
    ):
        evaluation = run(legacy_snapshot(), config)
        assert evaluation.suppressed == ()
        assert "sftp-enabled" in {f.rule_id for f in evaluation.findings}


def test_expired_suppression_is_reported_with_a_note_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.evaluate"):
        evaluation = run(legacy_snapshot(), suppress(NAME, date(2026, 5, 31)))
    assert evaluation.suppressed == ()
    (finding,) = [f for f in evaluation.findings if f.rule_id == "sftp-enabled"]
    assert finding.suppression_note == "suppression expired on 2026-05-31 (vendor SFTP drop until Q3)"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "shared.evaluate"]
    assert len(warnings) == 1
    assert "expired on 2026-05-31" in warnings[0].getMessage() and ACCOUNT in warnings[0].getMessage()


# -- configuration files --------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    return json.dumps(value)  # strings, booleans, integers and lists of them are valid TOML as JSON


def to_toml(data: dict[str, Any]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if k not in {"rules", "suppressions"}]
    for rule_id, body in data.get("rules", {}).items():
        lines.append(f'[rules."{rule_id}"]')
        lines += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    for item in data.get("suppressions", []):
        lines.append("[[suppressions]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


WRITERS = {
    "toml": to_toml,
    "yaml": lambda data: yaml.safe_dump(data, sort_keys=False),
    "json": lambda data: json.dumps(data, indent=2),
}

GOOD_SUPPRESSION = {
    "rule": "sftp-enabled",
    "resource": NAME,
    "expires": "2026-12-31",
    "reason": "vendor drop",
}

BAD_CONFIGS = {
    "unknown-rule": (
        {"rules": {"no-such-rule": {"enabled": False}}},
        "rules: unknown rule id 'no-such-rule'",
    ),
    "unknown-suppressed-rule": (
        {"suppressions": [{**GOOD_SUPPRESSION, "rule": "sftp"}]},
        "suppressions[0].rule: unknown rule id 'sftp'",
    ),
    "bad-severity": (
        {"rules": {"sftp-enabled": {"severity": "urgent"}}},
        "rules.sftp-enabled.severity: unknown severity 'urgent'",
    ),
    "bad-date": (
        {"suppressions": [{**GOOD_SUPPRESSION, "expires": "2026-13-45"}]},
        "suppressions[0].expires: expected a date like 2026-12-31, got '2026-13-45'",
    ),
    "missing-reason": (
        {"suppressions": [{k: v for k, v in GOOD_SUPPRESSION.items() if k != "reason"}]},
        "suppressions[0]: missing reason",
    ),
    "blank-reason": (
        {"suppressions": [{**GOOD_SUPPRESSION, "reason": "  "}]},
        "suppressions[0].reason: a suppression needs a reason",
    ),
    "unknown-rule-key": (
        {"rules": {"sftp-enabled": {"colour": "red"}}},
        "rules.sftp-enabled: unknown key(s) colour",
    ),
    "unknown-top-key": ({"rule": {}}, "unknown top-level key(s) rule"),
    "enabled-not-bool": (
        {"rules": {"sftp-enabled": {"enabled": "no"}}},
        "rules.sftp-enabled.enabled: expected true or false",
    ),
    "prefix-on-wrong-rule": (
        {"rules": {"sftp-enabled": {"max_prefix_ipv4": 8}}},
        "rules.sftp-enabled: prefix limits only apply to inbound-rule-too-broad",
    ),
    "prefix-out-of-range": (
        {"rules": {"inbound-rule-too-broad": {"max_prefix_ipv4": 33}}},
        "expected a prefix length between 0 and 32, got 33",
    ),
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_files_name_the_problem(tmp_path: Path, fmt: str, case: str) -> None:
    data, message = BAD_CONFIGS[case]
    path = tmp_path / f"rules.{fmt}"
    path.write_text(WRITERS[fmt](data), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: "), text
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_good_config_files_load_the_same_in_every_format(tmp_path: Path, fmt: str) -> None:
    data = {
        "rules": {
            "lifecycle-management": {"enabled": False},
            "subscription-rule": {"severity": "high"},
            "inbound-rule-too-broad": {"max_prefix_ipv4": 12, "max_prefix_ipv6": 40},
        },
        "suppressions": [GOOD_SUPPRESSION],
    }
    path = tmp_path / f"rules.{fmt}"
    path.write_text(WRITERS[fmt](data), encoding="utf-8")
    config = load_config_file(path)
    assert config.override("lifecycle-management").enabled is False
    assert config.override("subscription-rule").severity is Severity.HIGH
    assert config.override("sftp-enabled") == RuleOverride()
    assert config.params == RuleParams(max_inbound_prefix_ipv4=12, max_inbound_prefix_ipv6=40)
    assert config.suppressions == (Suppression("sftp-enabled", NAME, date(2026, 12, 31), "vendor drop"),)


def test_toml_native_date_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[suppressions]]\nrule = "sftp-enabled"\nresource = "x"\nexpires = 2026-12-31\nreason = "r"\n',
        encoding="utf-8",
    )
    assert load_config_file(path).suppressions[0].expires == date(2026, 12, 31)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("rules.toml", "rules = [", "is not valid toml"),
        ("rules.yaml", "rules: [unclosed", "is not valid yaml"),
        ("rules.json", "{", "is not valid json"),
        ("rules.json", "[]", "expected an object at the top level"),
        ("rules.yml", "- a\n- b\n", "expected a mapping at the top level"),
    ],
)
def test_unparseable_config_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config_file(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.toml does not exist"):
        load_config_file(tmp_path / "nope.toml")


def test_empty_yaml_is_the_default_config(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("", encoding="utf-8")
    assert load_config_file(path) == RulesConfig()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "rules.toml",
            '[[suppressions]]\nrule = "sftp-enabled"\nresource = "stprobe01"\n'
            'expires = 2026-12-31T12:00:00\nreason = "r"\n',
        ),
        (
            "rules.yaml",
            "suppressions:\n- {rule: sftp-enabled, resource: stprobe01, expires: 2026-12-31 12:00:00, reason: r}\n",
        ),
    ],
    ids=["toml", "yaml"],
)
def test_datetime_expiry_counts_by_its_day(tmp_path: Path, name: str, text: str) -> None:
    # Was a bug: the datetime was kept and evaluate() raised TypeError comparing it with a date,
    # which made the CLI report the account as "unreadable" and drop its findings.
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    config = load_config_file(path)
    assert config.suppressions[0].expires == date(2026, 12, 31)
    assert type(config.suppressions[0].expires) is date
    evaluation = run(replace(snap(), is_sftp_enabled=True), config)
    assert [f.rule_id for f in evaluation.suppressed] == ["sftp-enabled"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("reason", "suppressions[0].reason: a suppression needs a reason"),
        ("resource", "suppressions[0].resource: expected a storage account id or name"),
    ],
)
def test_yaml_null_reason_or_resource_is_refused(tmp_path: Path, key: str, message: str) -> None:
    # Was a bug: a YAML null became the text "None" and was accepted as the reason/resource.
    path = tmp_path / "rules.yaml"
    item = {**GOOD_SUPPRESSION, key: None}
    path.write_text(yaml.safe_dump({"suppressions": [item]}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert message in str(caught.value)


# -- configuration from app settings ---------------------------------------------------------------------


def test_settings_empty_is_the_default() -> None:
    assert config_from_settings({}) == RulesConfig(overrides={})


def test_settings_inline_json() -> None:
    inline = json.dumps({"rules": {"static-website": {"enabled": False}}, "suppressions": [GOOD_SUPPRESSION]})
    config = config_from_settings({"NSP_DRIFT_RULES_CONFIG": f"  {inline}  "})
    assert config.override("static-website").enabled is False
    assert config.suppressions[0].resource == NAME


def test_settings_file_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(to_toml({"rules": {"blob-inventory": {"severity": "critical"}}}), encoding="utf-8")
    config = config_from_settings({"NSP_DRIFT_RULES_CONFIG": str(path)})
    assert config.override("blob-inventory").severity is Severity.CRITICAL


def test_settings_shortcuts_combine_with_the_config() -> None:
    env = {
        "NSP_DRIFT_RULES_CONFIG": json.dumps({"rules": {"sftp-enabled": {"severity": "low"}}}),
        "NSP_DRIFT_DISABLED_RULES": " lifecycle-management , blob-inventory,, ",
        "NSP_DRIFT_SEVERITY_OVERRIDES": "subscription-rule=HIGH, sftp-enabled = critical",
    }
    config = config_from_settings(env)
    assert config.override("lifecycle-management").enabled is False
    assert config.override("blob-inventory").enabled is False
    assert config.override("subscription-rule") == RuleOverride(True, Severity.HIGH)
    assert config.override("sftp-enabled") == RuleOverride(True, Severity.CRITICAL)
    evaluation = run(legacy_snapshot(), config)
    severities = {f.rule_id: f.severity for f in evaluation.findings}
    assert severities["subscription-rule"] is Severity.HIGH and severities["sftp-enabled"] is Severity.CRITICAL


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NSP_DRIFT_RULES_CONFIG": "{not json"}, "NSP_DRIFT_RULES_CONFIG: not valid JSON"),
        (
            {"NSP_DRIFT_RULES_CONFIG": '{"rules": {"x": {}}}'},
            "NSP_DRIFT_RULES_CONFIG: rules: unknown rule id 'x'",
        ),
        (
            {"NSP_DRIFT_RULES_CONFIG": "/nonexistent/rules.toml"},
            "config file /nonexistent/rules.toml does not exist",
        ),
        (
            {"NSP_DRIFT_DISABLED_RULES": "sftp-enabled,sftp"},
            "NSP_DRIFT_DISABLED_RULES: unknown rule id 'sftp'",
        ),
        (
            {"NSP_DRIFT_SEVERITY_OVERRIDES": "sftp-enabled"},
            "NSP_DRIFT_SEVERITY_OVERRIDES: expected rule=severity",
        ),
        (
            {"NSP_DRIFT_SEVERITY_OVERRIDES": "sftp-enabled=urgent"},
            "NSP_DRIFT_SEVERITY_OVERRIDES: unknown severity 'urgent'",
        ),
        (
            {"NSP_DRIFT_SEVERITY_OVERRIDES": "nope=low"},
            "NSP_DRIFT_SEVERITY_OVERRIDES: unknown rule id 'nope'",
        ),
    ],
)
def test_settings_errors_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_settings(env)
    assert message in str(caught.value)
