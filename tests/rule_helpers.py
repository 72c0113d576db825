"""Shared pieces of the rule tests (one test module per rule, ``tests/test_rule_*.py``) and the
rules-configuration tests: the probe account, snapshots built by hand or read from the estate
built from the official examples, and configuration writers.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import yaml

from shared.core.config import RulesConfig
from shared.core.evaluate import evaluate
from shared.core.model import (
    AccessMode,
    AccessRule,
    Encryption,
    Evaluation,
    Finding,
    PerimeterView,
    ProvisioningIssue,
    StorageAccountSnapshot,
)
from shared.core.rules import RULES_BY_ID
from tests import estate_builder as eb
from tests.sample_estate import NSP_GUID, NSP_ID, RG_DATA, SUB, account_id

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


def run(snapshot: StorageAccountSnapshot, config: RulesConfig | None = None, today: date = TODAY) -> Evaluation:
    return evaluate(snapshot, config or RulesConfig(), today)


def of(snapshot: StorageAccountSnapshot, rule_id: str, config: RulesConfig | None = None) -> list[Finding]:
    assert rule_id in RULES_BY_ID
    return [f for f in run(snapshot, config).findings if f.rule_id == rule_id]


def details(finding: Finding) -> dict[str, Any]:
    """The one evidence item of a finding, without its subject and summary."""
    (item,) = finding.evidence
    assert item["summary"] == finding.summary  # one item: the finding reads as the item
    return {k: v for k, v in item.items() if k not in ("subject", "summary")}


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


def legacy_snapshot() -> StorageAccountSnapshot:
    return read(eb.member(NAME, profile=eb.LEGACY, mode="Learning", isSftpEnabled=True))


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
