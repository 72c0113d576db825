"""The catalogue as a whole: one module per rule, documented, each owning its scope; the pseudo-rules.

A rule owns its scope and metadata: which change kinds may judge it (``Rule.judged_by``), what it
references (``Rule.references``), its id, title, severity, reason and fix. The pseudo-rules
(perimeter changes, operator alerts) are declared the same way in ``shared.changes``.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from shared.changes import (
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
from shared.model import Severity
from shared.notify.explain import why_and_how
from shared.notify.webhook import event_type
from shared.rules import ALL_RULES, RULES_BY_ID, judged_by
from shared.rules.base import Rule

ROOT = Path(__file__).resolve().parents[1]
RULE_MODULES = sorted(p.stem for p in (ROOT / "shared" / "rules").glob("*.py") if p.stem not in ("__init__", "base"))
REFERENCED = (TargetKind.PERIMETER, TargetKind.VIRTUAL_MACHINE, TargetKind.BACKUP_INSTANCE, TargetKind.KEY_VAULT)


def readme_rule_ids() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("<!-- rules:start -->", 1)[1].split("<!-- rules:end -->", 1)[0]
    return re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.MULTILINE)


# -- one module per rule, named after it, in the README --------------------------------------------


@pytest.mark.parametrize("module", RULE_MODULES)
def test_every_rule_id_matches_its_module_name_and_appears_in_the_readme_table(module: str) -> None:
    rule = importlib.import_module(f"shared.rules.{module}").RULE
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
    # shared.drift reports both from one comparison of the stored and read associations.
    assert PERIMETER_ASSOCIATION_CHANGED_RULE.judged_by == PERIMETER_MODE_CHANGED_RULE.judged_by


def test_a_catalogue_rule_explains_itself_and_an_unknown_id_explains_nothing() -> None:
    rule = RULES_BY_ID["sftp-enabled"]
    assert why_and_how(rule.id) == (rule.reason, rule.remediation)
    assert why_and_how("no-such-rule") == ("", "")
    assert event_type({"rule": rule.id, "transition": "opened"}) == "com.nspdrift.finding.opened"
