"""Rules configuration: per-rule enablement and severity, rule parameters, suppressions.

Loaded from a TOML, YAML or JSON file, or from app settings. Every problem raises ConfigError
with a message that names the offending key, so the CLI can print one line and exit 2 and the
function app can log it and refuse to run (``shared.entrypoints.settings`` turns it into a SettingsError; a
misconfigured app evaluates nothing rather than evaluating with rules it was told to change).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from shared.core.model import Severity
from shared.core.rules import ALL_RULES, RULES_BY_ID
from shared.core.rules.base import RuleParams


class ConfigError(ValueError):
    """A configuration value is wrong; the message names it."""


@dataclass(frozen=True)
class RuleOverride:
    enabled: bool = True
    severity: Severity | None = None


@dataclass(frozen=True)
class Suppression:
    rule_id: str
    resource: str  # a storage account id or a bare account name, compared case-insensitively
    expires: date
    reason: str

    def matches(self, rule_id: str, resource_id: str) -> bool:
        if rule_id != self.rule_id:
            return False
        wanted = self.resource.lower()
        rid = resource_id.lower()
        return rid == wanted or rid.rsplit("/", 1)[-1] == wanted


@dataclass(frozen=True)
class RulesConfig:
    overrides: Mapping[str, RuleOverride] = field(default_factory=dict)
    params: RuleParams = field(default_factory=RuleParams)
    suppressions: tuple[Suppression, ...] = ()

    def override(self, rule_id: str) -> RuleOverride:
        return self.overrides.get(rule_id, RuleOverride())


_COMMON_KEYS = {"enabled", "severity"}
_RULE_KEYS = _COMMON_KEYS | {key for rule in ALL_RULES for key in rule.parameters}  # Rule.parameters


def _known_rule(rule_id: object, where: str) -> str:
    if not isinstance(rule_id, str) or rule_id not in RULES_BY_ID:
        raise ConfigError(f"{where}: unknown rule id {rule_id!r} (see `nsp-drift rules`)")
    return rule_id


def _prefix(value: object, where: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ConfigError(f"{where}: expected a prefix length between 0 and {top}, got {value!r}")
    return value


def _parse_rules(section: object) -> tuple[dict[str, RuleOverride], RuleParams]:
    if not isinstance(section, Mapping):
        raise ConfigError("rules: expected a table of rule ids")
    overrides: dict[str, RuleOverride] = {}
    params = RuleParams()
    for rule_id, body in section.items():
        where = f"rules.{rule_id}"
        _known_rule(rule_id, "rules")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: expected a table")
        unknown = set(body) - _RULE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}.enabled: expected true or false, got {enabled!r}")
        severity = None
        if "severity" in body:
            try:
                severity = Severity.parse(str(body["severity"]))
            except ValueError as exc:
                raise ConfigError(f"{where}.severity: {exc}") from None
        foreign = set(body) - _COMMON_KEYS - RULES_BY_ID[rule_id].parameters
        if foreign:
            owners = ", ".join(r.id for r in ALL_RULES if r.parameters & foreign)
            raise ConfigError(f"{where}: prefix limits only apply to {owners}")
        if "max_prefix_ipv4" in body:
            params = replace(params, max_inbound_prefix_ipv4=_prefix(body["max_prefix_ipv4"], where, 32))
        if "max_prefix_ipv6" in body:
            params = replace(params, max_inbound_prefix_ipv6=_prefix(body["max_prefix_ipv6"], where, 128))
        overrides[rule_id] = RuleOverride(enabled=enabled, severity=severity)
    return overrides, params


def _parse_date(value: object, where: str) -> date:
    if isinstance(value, datetime):  # TOML/YAML date-times: the day is what expires
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{where}: expected a date like 2026-12-31, got {value!r}") from None


def _parse_suppressions(items: object) -> tuple[Suppression, ...]:
    if not isinstance(items, list):
        raise ConfigError("suppressions: expected a list")
    out = []
    for index, item in enumerate(items):
        where = f"suppressions[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: expected a table")
        missing = {"rule", "resource", "expires", "reason"} - set(item)
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(sorted(missing))}")
        if not isinstance(item["reason"], str) or not item["reason"].strip():
            raise ConfigError(f"{where}.reason: a suppression needs a reason")
        if not isinstance(item["resource"], str) or not item["resource"].strip():
            raise ConfigError(f"{where}.resource: expected a storage account id or name")
        reason = str(item["reason"]).strip()
        out.append(
            Suppression(
                rule_id=_known_rule(item["rule"], f"{where}.rule"),
                resource=str(item["resource"]).strip(),
                expires=_parse_date(item["expires"], f"{where}.expires"),
                reason=reason,
            )
        )
    return tuple(out)


def parse_config(data: Mapping[str, Any]) -> RulesConfig:
    unknown = set(data) - {"rules", "suppressions"}
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(sorted(unknown))} (expected rules, suppressions)")
    overrides, params = _parse_rules(data.get("rules", {}))
    return RulesConfig(overrides, params, _parse_suppressions(data.get("suppressions", [])))


def _read_structured(path: Path) -> Mapping[str, Any]:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return tomllib.loads(text)
    if suffix in {".yaml", ".yml"}:
        import yaml  # lazy: only YAML users pay for it

        loaded = yaml.safe_load(text)
        if loaded is None:
            return {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return loaded
    loaded_json = json.loads(text)
    if not isinstance(loaded_json, Mapping):
        raise ConfigError(f"{path}: expected an object at the top level")
    return loaded_json


def load_config_file(path: str | Path) -> RulesConfig:
    path = Path(path)
    try:
        data = _read_structured(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except ConfigError:
        raise
    except Exception as exc:  # tomllib/yaml/json each raise their own parse errors
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_from_settings(env: Mapping[str, str] | None = None) -> RulesConfig:
    """App settings: NSP_DRIFT_RULES_CONFIG (file path or inline JSON), then the two shortcuts
    NSP_DRIFT_DISABLED_RULES="id,id" and NSP_DRIFT_SEVERITY_OVERRIDES="id=low,id=high"."""
    env = os.environ if env is None else env
    raw = env.get("NSP_DRIFT_RULES_CONFIG", "").strip()
    if not raw:
        config = RulesConfig()
    elif raw.startswith("{"):
        try:
            config = parse_config(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"NSP_DRIFT_RULES_CONFIG: not valid JSON: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"NSP_DRIFT_RULES_CONFIG: {exc}") from None
    else:
        config = load_config_file(raw)
    overrides = dict(config.overrides)
    for rule_id in filter(None, (p.strip() for p in env.get("NSP_DRIFT_DISABLED_RULES", "").split(","))):
        _known_rule(rule_id, "NSP_DRIFT_DISABLED_RULES")
        overrides[rule_id] = replace(overrides.get(rule_id, RuleOverride()), enabled=False)
    for pair in filter(None, (p.strip() for p in env.get("NSP_DRIFT_SEVERITY_OVERRIDES", "").split(","))):
        rule_id, sep, level = pair.partition("=")
        if not sep:
            raise ConfigError(f"NSP_DRIFT_SEVERITY_OVERRIDES: expected rule=severity, got {pair!r}")
        _known_rule(rule_id.strip(), "NSP_DRIFT_SEVERITY_OVERRIDES")
        try:
            severity = Severity.parse(level)
        except ValueError as exc:
            raise ConfigError(f"NSP_DRIFT_SEVERITY_OVERRIDES: {exc}") from None
        overrides[rule_id.strip()] = replace(overrides.get(rule_id.strip(), RuleOverride()), severity=severity)
    return replace(config, overrides=overrides)
