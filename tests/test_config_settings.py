"""The rules configuration from app settings (shared.core.config.config_from_settings): NSP_DRIFT_RULES_CONFIG,
NSP_DRIFT_DISABLED_RULES and NSP_DRIFT_SEVERITY_OVERRIDES.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.core.config import ConfigError, RuleOverride, RulesConfig, config_from_settings
from shared.core.model import Severity
from tests.rule_helpers import GOOD_SUPPRESSION, NAME, legacy_snapshot, run, to_toml


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
