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
      "token_setting": "NSP_DRIFT_GITHUB_TOKEN", "labels": ["security"], "min_severity": "high"},
     {"name": "bus", "type": "eventgrid", "endpoint_setting": "NSP_DRIFT_EVENTGRID_ENDPOINT", "min_severity": "low"},
     {"name": "ns", "type": "eventgrid", "endpoint_setting": "NSP_DRIFT_EG_NAMESPACE", "topic": "security",
      "key_setting": "NSP_DRIFT_EG_KEY"}]

An ``eventgrid`` destination without ``key_setting`` publishes with the app's managed identity,
which needs the "EventGrid Data Sender" role on the topic (infra/: ``eventGridTopicId``).

Parsing checks shape only (no environment); ``build_senders`` resolves the named settings. Every
error names the offending field as ``NSP_DRIFT_DESTINATIONS[i].field`` and never echoes a value
that could be a secret.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from shared.adapters.notify.devops import AzureDevOpsSender
from shared.adapters.notify.eventgrid import EventGridSender
from shared.adapters.notify.github import GitHubIssuesSender
from shared.adapters.notify.teams import TeamsSender
from shared.adapters.notify.webhook import SecretFormatError, WebhookSender, signing_key
from shared.core.changes import OPERATOR_RULES, PERIMETER_RULES, PSEUDO_RULES_BY_ID
from shared.core.model import Severity
from shared.core.notify.base import Sender
from shared.core.notify.redact import register_secret
from shared.core.rules import RULES_BY_ID
from shared.service.dispatch import DigestSender

SETTING = "NSP_DRIFT_DESTINATIONS"
# Keys whose value names an app setting.
SETTING_KEYS = ("url_setting", "secret_setting", "token_setting", "endpoint_setting", "key_setting")

TYPES = ("teams", "webhook", "azure-devops", "github", "eventgrid")
TASK_TYPES = frozenset({"azure-devops", "github"})
KINDS = ("opened", "resolved", "changed")
KNOWN_RULES = frozenset({*RULES_BY_ID, *PSEUDO_RULES_BY_ID})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # also a storage table key: no / \ # ?
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")  # what App Service allows on Linux
_ORGANIZATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,49}$")
# An Event Grid namespace topic's name: 3-50 letters, digits and '-'.
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{2,49}$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_SECRETISH = re.compile(r"(?i)url|token|secret|password|pat|sig|key")
_MIN_SIGNING_KEY = 16  # bytes; Standard Webhooks recommends 24-64

_COMMON = ("name", "type", "min_severity", "rules", "transitions", "digest_below")
_FIELDS: dict[str, dict[str, str]] = {  # key -> kind of value; required keys are in _REQUIRED
    "teams": {"url_setting": "setting"},
    "webhook": {"url_setting": "setting", "secret_setting": "setting"},
    "azure-devops": {
        "organization": "organization",
        "project": "text",
        "token_setting": "setting",
        "work_item_type": "text",
        "area_path": "text",
        "assigned_to": "text",
        "tags": "tags",
        "done_state": "text",
        "reopen_state": "text",
        "base_url": "url",
    },
    "github": {
        "repository": "repository",
        "token_setting": "setting",
        "labels": "texts",
        "assignees": "texts",
        "api_url": "url",
    },
    "eventgrid": {"endpoint_setting": "setting", "topic": "topic", "key_setting": "setting"},
}
_REQUIRED = {
    "teams": ("url_setting",),
    "webhook": ("url_setting", "secret_setting"),
    "azure-devops": ("organization", "project", "token_setting"),
    "github": ("repository", "token_setting"),
    "eventgrid": ("endpoint_setting",),
}


class DestinationError(ValueError):
    """The destinations configuration is wrong; the message names the field."""


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    type: str
    index: int = 0  # position in the array, for error messages
    min_severity: Severity = Severity.MEDIUM
    rules: frozenset[str] | None = None  # None = every rule
    transitions: frozenset[str] = frozenset(KINDS)
    digest_below: Severity | None = None
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)  # the type-specific keys

    @property
    def where(self) -> str:
        return f"{SETTING}[{self.index}]"

    def accepts(self, transition: Mapping[str, Any]) -> bool:
        return accepts(self, transition)

    def is_digest(self, transition: Mapping[str, Any]) -> bool:
        return is_digest(self, transition)


# -- routing (pure) ---------------------------------------------------------------------------------


def _severity(value: object) -> Severity:
    try:
        return Severity.parse(str(value))
    except ValueError:
        return Severity.INFO


def _peak_severity(transition: Mapping[str, Any]) -> Severity:
    """The higher of now and before: a finding that just fell below a floor is still news there."""
    severity = _severity(transition.get("severity", "info"))
    before = transition.get("before")
    if transition.get("transition") != "opened" and isinstance(before, Mapping) and "severity" in before:
        severity = max(severity, _severity(before["severity"]))
    return severity


def accepts(config: DestinationConfig, transition: Mapping[str, Any]) -> bool:
    """Whether ``config`` wants this transition (``shared.core.changes.transition_to_dict`` form)."""
    kind, rule = str(transition.get("transition", "")), str(transition.get("rule", ""))
    if kind not in config.transitions or (config.rules is not None and rule not in config.rules):
        return False
    if config.type in TASK_TYPES and rule in PERIMETER_RULES:
        return False  # a perimeter-level change has no finding to open or close a task for
    if rule in OPERATOR_RULES:
        return True  # operator alerts bypass the severity floor
    if kind == "resolved" and config.type in TASK_TYPES:
        # Close whatever task was opened, even if the finding sank below the floor meanwhile; the
        # sender does nothing (no HTTP call) when no task of its own is open for the finding.
        return True
    return _peak_severity(transition) >= config.min_severity


def is_digest(config: DestinationConfig, transition: Mapping[str, Any]) -> bool:
    if config.digest_below is None or str(transition.get("rule", "")) in OPERATOR_RULES:
        return False
    return _severity(transition.get("severity", "info")) < config.digest_below


# -- parsing (shape only) -----------------------------------------------------------------------------


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DestinationError(f"{where}: expected non-empty text")
    return value.strip()


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DestinationError(f"{where}: expected a list of non-empty text")
    return tuple(v.strip() for v in value)


def _url(value: Any, where: str) -> str:
    text = _text(value, where)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationError(f"{where}: expected an https URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise DestinationError(f"{where}: plain http is only allowed to a loopback host (tokens travel here)")
    if parts.username or parts.password or parts.query:
        raise DestinationError(f"{where}: the URL must not carry credentials or a query")
    return text.rstrip("/")


def _value(kind: str, value: Any, where: str) -> Any:
    if kind == "setting":
        # Never echo: a value here that is not a setting name is most likely the secret itself.
        if not isinstance(value, str) or not _SETTING_NAME.match(value.strip()):
            raise DestinationError(
                f"{where}: expected the NAME of an app setting (letters, digits, _), not a URL or secret"
            )
        return value.strip()
    if kind == "texts":
        return _texts(value, where)
    if kind == "tags":
        tags = _texts(value, where)
        if any(";" in t for t in tags):
            raise DestinationError(f"{where}: a tag cannot contain ';' (Azure Boards separates tags with it)")
        return tags
    if kind == "url":
        return _url(value, where)
    text = _text(value, where)
    if kind == "organization" and not _ORGANIZATION.match(text):
        raise DestinationError(f"{where}: {text!r} is not an Azure DevOps organization name")
    if kind == "repository" and not _REPOSITORY.match(text):
        raise DestinationError(f"{where}: expected 'owner/name', got {text!r}")
    if kind == "topic" and not _TOPIC.match(text):
        raise DestinationError(
            f"{where}: {_short(text)!r} is not an Event Grid namespace topic name (3-50 letters, digits, '-')"
        )
    return text


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _parse_severity(entry: Mapping[str, Any], key: str, where: str) -> Severity | None:
    if key not in entry:
        return None
    try:
        return Severity.parse(str(entry[key]))
    except ValueError as exc:
        raise DestinationError(f"{where}.{key}: {exc}") from None


def _parse_rules(entry: Mapping[str, Any], where: str, kind: str) -> frozenset[str] | None:
    raw = entry.get("rules", "*")
    if raw in ("*", ["*"]):
        return None
    if not isinstance(raw, list) or not raw:
        raise DestinationError(f'{where}.rules: expected "*" or a non-empty list of rule ids')
    rules = frozenset(_texts(raw, f"{where}.rules"))
    unknown = sorted(rules - KNOWN_RULES)
    if unknown:
        raise DestinationError(f"{where}.rules: unknown rule id(s) {', '.join(unknown)}")
    perimeter = sorted(rules & PERIMETER_RULES)
    if kind in TASK_TYPES and perimeter:
        raise DestinationError(
            f"{where}.rules: {', '.join(perimeter)} has no finding to track as a task; "
            "route it to a teams or webhook destination"
        )
    return rules


def _parse_name(entry: Mapping[str, Any], where: str, seen: set[str]) -> str:
    name = _text(entry.get("name"), f"{where}.name")
    if not _NAME.match(name):
        raise DestinationError(f"{where}.name: {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if name in seen:
        raise DestinationError(f"{where}.name: {name!r} is used twice")
    seen.add(name)
    return name


def _parse_options(entry: Mapping[str, Any], where: str, kind: str) -> Mapping[str, Any]:
    """The type's own keys, checked: none unknown (with a hint when one looks like a secret), the
    required ones present, each value of its kind."""
    specific = _FIELDS[kind]
    unknown = sorted(set(entry) - set(_COMMON) - set(specific))
    if unknown:
        hint = (
            "; secrets and URLs never go here: put them in an app setting and name it in a *_setting key"
            if any(_SECRETISH.search(k) for k in unknown)
            else ""
        )
        raise DestinationError(f"{where}: unknown key(s) {', '.join(unknown)} for type {kind}{hint}")
    for key in _REQUIRED[kind]:
        if key not in entry:
            raise DestinationError(f"{where}.{key}: expected non-empty text (required for type {kind})")
    return MappingProxyType({k: _value(specific[k], entry[k], f"{where}.{k}") for k in specific if k in entry})


def _parse_digest_below(entry: Mapping[str, Any], where: str, kind: str, floor: Severity) -> Severity | None:
    digest_below = _parse_severity(entry, "digest_below", where)
    if digest_below is None:
        return None
    if kind in TASK_TYPES:
        raise DestinationError(f"{where}.digest_below: not supported for {kind} (one task per finding)")
    if digest_below <= floor:
        raise DestinationError(
            f"{where}.digest_below: must be above min_severity ({floor.label}), or nothing is ever digested"
        )
    return digest_below


def _parse_transitions(entry: Mapping[str, Any], where: str) -> frozenset[str]:
    if "transitions" not in entry:
        return frozenset(KINDS)
    transitions = frozenset(_texts(entry["transitions"], f"{where}.transitions"))
    if not transitions or transitions - set(KINDS):
        raise DestinationError(f"{where}.transitions: expected a non-empty list of {', '.join(KINDS)}")
    return transitions


def _parse_one(entry: Any, index: int, seen: set[str]) -> DestinationConfig:
    where = f"{SETTING}[{index}]"
    if not isinstance(entry, Mapping):
        raise DestinationError(f"{where}: expected an object")
    name = _parse_name(entry, where, seen)
    kind = _text(entry.get("type"), f"{where}.type")
    if kind not in TYPES:
        raise DestinationError(f"{where}.type: {kind!r} is not one of {', '.join(TYPES)}")
    options = _parse_options(entry, where, kind)

    floor = _parse_severity(entry, "min_severity", where)
    floor = Severity.MEDIUM if floor is None else floor  # not `or`: INFO is 0
    digest_below = _parse_digest_below(entry, where, kind, floor)
    transitions = _parse_transitions(entry, where)
    return DestinationConfig(
        name=name,
        type=kind,
        index=index,
        min_severity=floor,
        rules=_parse_rules(entry, where, kind),
        transitions=transitions,
        digest_below=digest_below,
        options=options,
    )


def parse_destinations(data: Any) -> tuple[DestinationConfig, ...]:
    if not isinstance(data, list):
        raise DestinationError(f"{SETTING}: expected a JSON array of destinations")
    seen: set[str] = set()
    return tuple(_parse_one(entry, index, seen) for index, entry in enumerate(data))


def load_destinations(env: Mapping[str, str] | None = None) -> tuple[DestinationConfig, ...]:
    """From ``NSP_DRIFT_DESTINATIONS``: inline JSON or the path of a JSON file; unset = none."""
    env = os.environ if env is None else env
    raw = env.get(SETTING, "").strip()
    if not raw:
        return ()
    if raw[0] in "[{":
        text = raw
    else:
        try:
            text = Path(raw).read_text(encoding="utf-8")
        except OSError:
            raise DestinationError(f"{SETTING}: file {raw} cannot be read") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DestinationError(
            f"{SETTING}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    return parse_destinations(data)


# -- building senders (reads the named settings) ------------------------------------------------------


def _setting(env: Mapping[str, str], config: DestinationConfig, key: str) -> str:
    where, setting = f"{config.where}.{key}", str(config.options[key])
    value = env.get(setting, "").strip()
    if not value:
        raise DestinationError(f"{where}: app setting {setting} is not set")
    if value.startswith("@Microsoft.KeyVault("):
        raise DestinationError(
            f"{where}: app setting {setting} is an unresolved Key Vault reference "
            "(check the app identity's access to the vault and the secret URI)"
        )
    register_secret(value)  # from now on masked in every log line and error
    return value


def _endpoint(env: Mapping[str, str], config: DestinationConfig, key: str) -> str:
    url = _setting(env, config, key)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationError(f"{config.where}.{key}: app setting {config.options[key]} is not an https URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise DestinationError(
            f"{config.where}.{key}: app setting {config.options[key]} must be https (plain http only to loopback)"
        )
    return url


def _topic_endpoint(env: Mapping[str, str], config: DestinationConfig) -> str:
    url = _endpoint(env, config, "endpoint_setting")
    parts = urlsplit(url)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise DestinationError(
            f"{config.where}.endpoint_setting: app setting {config.options['endpoint_setting']} must be the "
            "topic endpoint alone (no query, fragment or credentials: the key goes in key_setting)"
        )
    return url


def _signing_secret(env: Mapping[str, str], config: DestinationConfig) -> str:
    secret = _setting(env, config, "secret_setting")
    try:
        key = signing_key(secret)
    except SecretFormatError as exc:
        raise DestinationError(
            f"{config.where}.secret_setting: app setting {config.options['secret_setting']}: {exc}"
        ) from None
    if len(key) < _MIN_SIGNING_KEY:
        raise DestinationError(
            f"{config.where}.secret_setting: app setting {config.options['secret_setting']} is too short "
            f"for a signing secret (at least {_MIN_SIGNING_KEY} bytes)"
        )
    return secret


def build_sender(config: DestinationConfig, env: Mapping[str, str], **sender_kwargs: Any) -> Sender:
    """One sender; ``sender_kwargs`` (``retry``, ``timeout``) go to its constructor."""
    o = config.options
    if config.type == "teams":
        return TeamsSender(config.name, _endpoint(env, config, "url_setting"), **sender_kwargs)
    if config.type == "webhook":
        url = _endpoint(env, config, "url_setting")
        return WebhookSender(config.name, url, _signing_secret(env, config), **sender_kwargs)
    if config.type == "eventgrid":
        return EventGridSender(
            config.name,
            _topic_endpoint(env, config),
            topic=str(o["topic"]) if "topic" in o else None,
            key=_setting(env, config, "key_setting") if "key_setting" in o else None,
            **sender_kwargs,
        )
    if config.type == "azure-devops":
        return AzureDevOpsSender(
            config.name,
            str(o["organization"]),
            str(o["project"]),
            _setting(env, config, "token_setting"),
            work_item_type=str(o.get("work_item_type", "Task")),
            area_path=str(o.get("area_path", "")),
            assigned_to=str(o.get("assigned_to", "")),
            tags=tuple(o.get("tags", ())),
            done_state=str(o.get("done_state", "Done")),
            reopen_state=str(o.get("reopen_state", "")),
            base_url=str(o.get("base_url", "https://dev.azure.com")),
            min_severity=config.min_severity,
            **sender_kwargs,
        )
    return GitHubIssuesSender(
        config.name,
        str(o["repository"]),
        _setting(env, config, "token_setting"),
        labels=tuple(o.get("labels", ())),
        assignees=tuple(o.get("assignees", ())),
        api_url=str(o.get("api_url", "https://api.github.com")),
        min_severity=config.min_severity,
        **sender_kwargs,
    )


def build_senders(
    configs: Sequence[DestinationConfig], env: Mapping[str, str] | None = None, **sender_kwargs: Any
) -> tuple[dict[str, Sender], dict[str, DigestSender]]:
    """Senders and digest senders by destination name; the named settings are read here, once."""
    env = os.environ if env is None else env
    senders: dict[str, Sender] = {}
    digests: dict[str, DigestSender] = {}
    for config in configs:
        sender = build_sender(config, env, **sender_kwargs)
        senders[config.name] = sender
        if isinstance(sender, TeamsSender | WebhookSender | EventGridSender):  # tasks: one per finding
            digests[config.name] = sender.send_digest
    return senders, digests
