"""The catalogue as a whole: one module per rule, documented, each owning its scope; the pseudo-rules;
what holds across rules (outbound rules judge nothing, no rule applies outside a perimeter).

A rule owns its scope and metadata: which change kinds may judge it (``Rule.judged_by``), what it
references (``Rule.references``), its id, title, severity, reason and fix. The pseudo-rules
(perimeter changes, operator alerts) are declared the same way in ``shared.core.changes``.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.notify.webhook import event_type
from shared.core.changes import (
    ACCOUNT_CHANGES,
    OPERATOR_RULES,
    PERIMETER_ASSOCIATION_CHANGED_RULE,
    PERIMETER_MODE_CHANGED_RULE,
    PERIMETER_RULES,
    PSEUDO_RULES,
    PSEUDO_RULES_BY_ID,
    TARGET_KINDS,
    PseudoRule,
    TargetKind,
)
from shared.core.model import (
    AccessMode,
    BackupInstance,
    FileShare,
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
from shared.core.notify.explain import why_and_how
from shared.core.rules import ALL_RULES, RULES_BY_ID, judged_by
from shared.core.rules.base import Rule
from tests import estate_builder as eb
from tests.rule_helpers import ACCOUNT, CMK, EXPECTED_IDS, NAME, inbound, outbound, read, run, snap, view
from tests.sample_estate import PARTNER_SUB, RG_DATA, SUB

ROOT = Path(__file__).resolve().parents[1]
RULE_MODULES = sorted(
    p.stem for p in (ROOT / "shared" / "core" / "rules").glob("*.py") if p.stem not in ("__init__", "base")
)
REFERENCED = (TargetKind.PERIMETER, TargetKind.VIRTUAL_MACHINE, TargetKind.BACKUP_INSTANCE, TargetKind.KEY_VAULT)


def readme_rule_ids() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("<!-- rules:start -->", 1)[1].split("<!-- rules:end -->", 1)[0]
    return re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.MULTILINE)


# -- one module per rule, named after it, in the README --------------------------------------------


@pytest.mark.parametrize("module", RULE_MODULES)
def test_every_rule_id_matches_its_module_name_and_appears_in_the_readme_table(module: str) -> None:
    rule = importlib.import_module(f"shared.core.rules.{module}").RULE
    assert isinstance(rule, Rule)
    assert rule.id == module.replace("_", "-")
    assert RULES_BY_ID[rule.id] is rule
    assert rule.id in readme_rule_ids()


def test_the_catalogue_is_the_rule_modules_in_the_readme_order() -> None:
    assert sorted(rule.id.replace("-", "_") for rule in ALL_RULES) == RULE_MODULES
    assert readme_rule_ids() == [rule.id for rule in ALL_RULES]


# -- scope: which change kinds may judge a rule ----------------------------------------------------

PERIMETER_SIDE = {
    "association-not-enforced",
    "inbound-rule-too-broad",
    "service-tag-rule",
    "subscription-rule",
    "perimeter-provisioning-issue",
    "cmk-vault-outside-perimeter",
}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (TargetKind.ACCOUNT, None),  # the account's own change judges every rule
        (TargetKind.SWEEP, None),
        (TargetKind.PERIMETER, PERIMETER_SIDE),
        (TargetKind.VIRTUAL_MACHINE, {"unmanaged-disk"}),
        (TargetKind.BACKUP_INSTANCE, {"azure-backup"}),
        (TargetKind.KEY_VAULT, {"cmk-vault-outside-perimeter"}),
    ],
)
def test_what_each_change_kind_may_judge_is_asked_of_the_rules(kind: TargetKind, expected: set[str] | None) -> None:
    assert judged_by(kind) == (None if expected is None else frozenset(expected))


def test_every_change_kind_is_declared_somewhere() -> None:
    assert set(TARGET_KINDS) | {TargetKind.SWEEP} == set(TargetKind)
    for kind in TargetKind:
        assert any(kind in rule.judged_by for rule in ALL_RULES), kind


@pytest.mark.parametrize("rule", [*ALL_RULES, *PSEUDO_RULES], ids=lambda r: r.id)
def test_a_rule_is_judged_by_changes_of_what_it_references(rule: Rule | PseudoRule) -> None:
    assert set(rule.references) <= set(REFERENCED), rule.id  # the account itself is implied
    assert set(rule.references) <= set(rule.judged_by), rule.id
    assert set(rule.judged_by) <= set(TargetKind)


@pytest.mark.parametrize(
    ("rule_id", "references"),
    [
        ("unmanaged-disk", {TargetKind.VIRTUAL_MACHINE}),
        ("azure-backup", {TargetKind.BACKUP_INSTANCE}),
        ("cmk-vault-outside-perimeter", {TargetKind.PERIMETER, TargetKind.KEY_VAULT}),
        ("association-not-enforced", {TargetKind.PERIMETER}),
        ("sftp-enabled", set()),
    ],
)
def test_what_a_rule_references(rule_id: str, references: set[TargetKind]) -> None:
    assert RULES_BY_ID[rule_id].references == references


def test_only_the_inbound_rule_reads_parameters() -> None:
    owners = {rule.id: rule.parameters for rule in ALL_RULES if rule.parameters}
    assert owners == {"inbound-rule-too-broad": {"max_prefix_ipv4", "max_prefix_ipv6"}}


# -- pseudo-rules ------------------------------------------------------------------------------------


def test_pseudo_rules_are_declared_once_and_apart_from_the_catalogue() -> None:
    ids = [rule.id for rule in PSEUDO_RULES]
    assert ids == [
        "perimeter-access-rules-changed",
        "perimeter-association-changed",
        "perimeter-access-mode-changed",
        "evaluation-poisoned",
        "evaluation-failing",
        "sweep-heartbeat",
    ]
    assert set(PSEUDO_RULES_BY_ID) == set(ids) and not set(ids) & set(RULES_BY_ID)
    assert set(ids[:3]) == PERIMETER_RULES and set(ids[3:]) == OPERATOR_RULES


@pytest.mark.parametrize("rule", PSEUDO_RULES, ids=lambda r: r.id)
def test_a_pseudo_rule_owns_its_metadata(rule: PseudoRule) -> None:
    for text in (rule.title, rule.reason, rule.remediation):
        assert text.strip() and text == text.strip()
    assert isinstance(rule.severity, Severity)
    assert why_and_how(rule.id) == (rule.reason, rule.remediation)
    assert event_type({"rule": rule.id, "transition": "changed"}) == f"com.nspdrift.{rule.category}.changed"
    if rule.category == "operator":
        assert rule.judged_by == frozenset() and rule.references == frozenset()  # raised by the pipeline itself
    else:
        assert rule.category == "perimeter"
        assert rule.judged_by == ACCOUNT_CHANGES | {TargetKind.PERIMETER}
        assert rule.references == {TargetKind.PERIMETER}


def test_association_and_mode_changes_are_judged_together() -> None:
    # shared.core.drift reports both from one comparison of the stored and read associations.
    assert PERIMETER_ASSOCIATION_CHANGED_RULE.judged_by == PERIMETER_MODE_CHANGED_RULE.judged_by


def test_a_catalogue_rule_explains_itself_and_an_unknown_id_explains_nothing() -> None:
    rule = RULES_BY_ID["sftp-enabled"]
    assert why_and_how(rule.id) == (rule.reason, rule.remediation)
    assert why_and_how("no-such-rule") == ("", "")
    assert event_type({"rule": rule.id, "transition": "opened"}) == "com.nspdrift.finding.opened"


# -- the catalogue ----------------------------------------------------------------------------------


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
    assert rule.evidence.strip() and entry["evidence"] == rule.evidence  # what one evidence item is


# -- across rules: access-rule directions, accounts outside any perimeter ----------------------------


def test_outbound_fqdn_rules_trigger_no_inbound_rule() -> None:
    # The strict profile's outbound rule comes from the official NspAccessRuleGet example.
    snapshot = read(eb.member(NAME, profile=eb.STRICT))
    rules = snapshot.perimeters[0].access_rules
    assert any(not r.is_inbound and r.fully_qualified_domain_names for r in rules)
    assert run(snapshot).findings == ()
    fqdn = outbound(fully_qualified_domain_names=("paasrp1.contoso.org",))
    assert run(snap(view(fqdn))).findings == ()


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
