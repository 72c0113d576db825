"""The rules configuration (shared.core.config): per-rule overrides, suppressions, configuration files."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
import yaml

from shared.core.config import ConfigError, RuleOverride, RulesConfig, Suppression, load_config_file, parse_config
from shared.core.model import Severity
from shared.core.rules.base import RuleParams
from tests.rule_helpers import (
    ACCOUNT,
    BAD_CONFIGS,
    GOOD_SUPPRESSION,
    NAME,
    TODAY,
    WRITERS,
    inbound,
    legacy_snapshot,
    of,
    run,
    snap,
    view,
)

# -- overrides --------------------------------------------------------------------------------


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


# -- suppressions --------------------------------------------------------------------------------


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
    with caplog.at_level(logging.WARNING, logger="shared.core.evaluate"):
        evaluation = run(legacy_snapshot(), suppress(NAME, date(2026, 5, 31)))
    assert evaluation.suppressed == ()
    (finding,) = [f for f in evaluation.findings if f.rule_id == "sftp-enabled"]
    assert finding.suppression_note == "suppression expired on 2026-05-31 (vendor SFTP drop until Q3)"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "shared.core.evaluate"]
    assert len(warnings) == 1
    assert "expired on 2026-05-31" in warnings[0].getMessage() and ACCOUNT in warnings[0].getMessage()


# -- configuration files --------------------------------------------------------------------------------


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
