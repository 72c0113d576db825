"""Where transitions go: the destinations configuration, routing, and the senders it builds.

``NSP_DRIFT_DESTINATIONS`` is a JSON array (inline, or a file path). It holds no secret: each
destination names the app settings that carry its URL, signing secret or token, so those can be
Key Vault references. Example::

    [{"name": "secops", "type": "teams", "url_setting": "NSP_DRIFT_TEAMS_URL", "min_severity": "medium"},
     {"name": "siem", "type": "webhook", "url_setting": "NSP_DRIFT_SIEM_URL", "secret_setting": "NSP_DRIFT_SIEM_SECRET",
      "min_severity": "low", "digest_below": "medium"},
     {"name": "boards", "type": "azure-devops", "organization": "contoso", "project": "Platform",
      "token_setting": "NSP_DRIFT_ADO_TOKEN", "min_severity": "high", "area_path": "Platform\\\\Security"},
     {"name": "issues", "type": "github", "repository": "contoso/platform-security",
      "token_setting": "NSP_DRIFT_GITHUB_TOKEN", "labels": ["security"], "min_severity": "high"}]
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.changes import (
    EVALUATION_POISONED,
    PERIMETER_ASSOCIATION_CHANGED,
    PERIMETER_MODE_CHANGED,
    PERIMETER_RULES_CHANGED,
)
from shared.model import Severity
from shared.notify.base import Sender
from shared.notify.dispatch import DigestSender
from shared.notify.redact import register_secret
from shared.rules import RULES_BY_ID

SETTING = "NSP_DRIFT_DESTINATIONS"
TYPES = ("teams", "webhook", "azure-devops", "github")
KNOWN_RULES = {
    *RULES_BY_ID,
    PERIMETER_RULES_CHANGED,
    PERIMETER_ASSOCIATION_CHANGED,
    PERIMETER_MODE_CHANGED,
    EVALUATION_POISONED,
}
KINDS = ("opened", "resolved", "changed")
_COMMON = {"name", "type", "min_severity", "rules", "transitions", "digest_below"}
_SPECIFIC = {
    "teams": {"url_setting"},
    "webhook": {"url_setting", "secret_setting"},
    "azure-devops": {
        "organization",
        "project",
        "token_setting",
        "work_item_type",
        "area_path",
        "assigned_to",
        "tags",
        "done_state",
        "base_url",
    },
    "github": {"repository", "token_setting", "labels", "assignees", "api_url"},
}
_REQUIRED = {
    "teams": {"url_setting"},
    "webhook": {"url_setting", "secret_setting"},
    "azure-devops": {"organization", "project", "token_setting"},
    "github": {"repository", "token_setting"},
}


class DestinationError(ValueError):
    """The destinations configuration is wrong; the message names the field."""


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    type: str
    min_severity: Severity = Severity.MEDIUM
    rules: frozenset[str] | None = None  # None = every rule
    transitions: frozenset[str] = frozenset(KINDS)
    digest_below: Severity | None = None
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def accepts(self, transition: Mapping[str, Any]) -> bool:
        if str(transition.get("transition")) not in self.transitions:
            return False
        if self.rules is not None and str(transition.get("rule")) not in self.rules:
            return False
        if str(transition.get("rule")) == EVALUATION_POISONED:
            return True  # operator alerts bypass the severity floor
        # A resolution is reported where its opening was: judge it by the severity it had.
        return _severity(transition) >= self.min_severity

    def is_digest(self, transition: Mapping[str, Any]) -> bool:
        return self.digest_below is not None and _severity(transition) < self.digest_below


def _severity(transition: Mapping[str, Any]) -> Severity:
    try:
        return Severity.parse(str(transition.get("severity", "info")))
    except ValueError:
        return Severity.INFO


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DestinationError(f"{where}.{key}: expected non-empty text")
    return value.strip()


def _texts(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DestinationError(f"{where}.{key}: expected a list of text")
    return tuple(value)


def _parse_severity(entry: Mapping[str, Any], key: str, where: str, default: Severity | None) -> Severity | None:
    if key not in entry:
        return default
    try:
        return Severity.parse(str(entry[key]))
    except ValueError as exc:
        raise DestinationError(f"{where}.{key}: {exc}") from None


def parse_destinations(data: Any) -> tuple[DestinationConfig, ...]:
    if not isinstance(data, list):
        raise DestinationError(f"{SETTING}: expected a JSON array of destinations")
    seen: set[str] = set()
    out = []
    for index, entry in enumerate(data):
        where = f"{SETTING}[{index}]"
        if not isinstance(entry, Mapping):
            raise DestinationError(f"{where}: expected an object")
        name = _text(entry, "name", where)
        kind = _text(entry, "type", where)
        if kind not in TYPES:
            raise DestinationError(f"{where}.type: {kind!r} is not one of {', '.join(TYPES)}")
        if name in seen:
            raise DestinationError(f"{where}.name: {name!r} is used twice")
        seen.add(name)
        unknown = set(entry) - _COMMON - _SPECIFIC[kind]
        if unknown:
            raise DestinationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for type {kind}")
        for key in _REQUIRED[kind]:
            _text(entry, key, where)
        rules: frozenset[str] | None = None
        raw_rules = entry.get("rules", "*")
        if raw_rules not in ("*", ["*"]):
            rules = frozenset(_texts(entry, "rules", where))
            bad = sorted(rules - KNOWN_RULES)
            if bad:
                raise DestinationError(f"{where}.rules: unknown rule id(s) {', '.join(bad)}")
        transitions = frozenset(_texts(entry, "transitions", where)) if "transitions" in entry else frozenset(KINDS)
        if not transitions or transitions - set(KINDS):
            raise DestinationError(f"{where}.transitions: expected some of {', '.join(KINDS)}")
        options = {k: v for k, v in entry.items() if k in _SPECIFIC[kind]}
        for key in ("tags", "labels", "assignees"):
            if key in options:
                options[key] = _texts(entry, key, where)
        floor = _parse_severity(entry, "min_severity", where, Severity.MEDIUM)
        out.append(
            DestinationConfig(
                name=name,
                type=kind,
                min_severity=Severity.MEDIUM if floor is None else floor,  # INFO is 0: no `or` here
                rules=rules,
                transitions=transitions,
                digest_below=_parse_severity(entry, "digest_below", where, None),
                options=options,
            )
        )
    return tuple(out)


def load_destinations(env: Mapping[str, str] | None = None) -> tuple[DestinationConfig, ...]:
    env = os.environ if env is None else env
    raw = env.get(SETTING, "").strip()
    if not raw:
        return ()
    if raw.startswith("["):
        text = raw
    else:
        try:
            text = Path(raw).read_text(encoding="utf-8")
        except OSError:
            raise DestinationError(f"{SETTING}: file {raw} cannot be read") from None
    try:
        return parse_destinations(json.loads(text))
    except json.JSONDecodeError as exc:
        raise DestinationError(f"{SETTING}: not valid JSON: {exc}") from None


def _secret(env: Mapping[str, str], config: DestinationConfig, key: str) -> str:
    setting = str(config.options[key])
    value = env.get(setting, "")
    if not value:
        raise DestinationError(f"destination {config.name!r}.{key}: app setting {setting} is not set")
    register_secret(value)  # from now on masked in every log line and error
    return value


def build_senders(
    configs: Sequence[DestinationConfig], env: Mapping[str, str] | None = None, **sender_kwargs: Any
) -> tuple[dict[str, Sender], dict[str, DigestSender]]:
    """Senders and digest senders by destination name; secrets read from ``env`` here, once."""
    from shared.notify.tasks import AzureDevOpsSender, GitHubIssuesSender
    from shared.notify.teams import TeamsSender
    from shared.notify.webhook import WebhookSender

    env = os.environ if env is None else env
    senders: dict[str, Sender] = {}
    digests: dict[str, DigestSender] = {}
    for c in configs:
        o = c.options
        if c.type == "teams":
            teams = TeamsSender(c.name, _secret(env, c, "url_setting"), **sender_kwargs)
            senders[c.name], digests[c.name] = teams, teams.send_digest
        elif c.type == "webhook":
            hook = WebhookSender(
                c.name, _secret(env, c, "url_setting"), _secret(env, c, "secret_setting"), **sender_kwargs
            )
            senders[c.name], digests[c.name] = hook, hook.send_digest
        elif c.type == "azure-devops":
            senders[c.name] = AzureDevOpsSender(
                c.name,
                str(o["organization"]),
                str(o["project"]),
                _secret(env, c, "token_setting"),
                work_item_type=str(o.get("work_item_type", "Task")),
                area_path=str(o.get("area_path", "")),
                assigned_to=str(o.get("assigned_to", "")),
                tags=tuple(o.get("tags", ())),
                done_state=str(o.get("done_state", "Done")),
                base_url=str(o.get("base_url", "https://dev.azure.com")),
                **sender_kwargs,
            )
        else:
            senders[c.name] = GitHubIssuesSender(
                c.name,
                str(o["repository"]),
                _secret(env, c, "token_setting"),
                labels=tuple(o.get("labels", ())),
                assignees=tuple(o.get("assignees", ())),
                api_url=str(o.get("api_url", "https://api.github.com")),
                **sender_kwargs,
            )
    return senders, digests
