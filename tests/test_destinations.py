"""The destinations configuration: parsing, every error naming its field, secrets resolved from
other app settings at build time (never in the JSON), routing and digests."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.adapters.notify.destinations import (
    KNOWN_RULES,
    SETTING,
    DestinationConfig,
    DestinationError,
    accepts,
    build_senders,
    is_digest,
    load_destinations,
    parse_destinations,
)
from shared.adapters.notify.devops import AzureDevOpsSender
from shared.adapters.notify.github import GitHubIssuesSender
from shared.adapters.notify.teams import MAX_CARD_BYTES, TeamsSender, build_digest_card, card_bytes
from shared.adapters.notify.webhook import WebhookSender, build_digest_event
from shared.core.changes import EVALUATION_FAILING, EVALUATION_POISONED, SWEEP_HEARTBEAT
from shared.core.model import Severity
from shared.core.notify import redact
from shared.core.rules import RULES_BY_ID
from tests.fakes.transitions import ALL_RULES, KINDS, PSEUDO_RULES, make_transition

HOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef01234567").decode()
FULL = [
    {"name": "secops", "type": "teams", "url_setting": "NSP_DRIFT_TEAMS_URL"},
    {
        "name": "siem",
        "type": "webhook",
        "url_setting": "NSP_DRIFT_SIEM_URL",
        "secret_setting": "NSP_DRIFT_SIEM_SECRET",
        "min_severity": "low",
        "digest_below": "medium",
        "transitions": ["opened", "resolved"],
    },
    {
        "name": "boards",
        "type": "azure-devops",
        "organization": "contoso",
        "project": "Platform Security",
        "token_setting": "NSP_DRIFT_ADO_TOKEN",
        "work_item_type": "Bug",
        "area_path": "Platform Security\\Network",
        "assigned_to": "secops@contoso.com",
        "tags": ["security", "nsp"],
        "done_state": "Closed",
        "reopen_state": "Active",
        "base_url": "https://dev.azure.com",
        "min_severity": "high",
        "rules": ["sftp-enabled", "static-website", EVALUATION_POISONED],
    },
    {
        "name": "issues",
        "type": "github",
        "repository": "contoso/platform-security",
        "token_setting": "NSP_DRIFT_GITHUB_TOKEN",
        "labels": ["security"],
        "assignees": ["octocat"],
        "api_url": "https://github.example.com/api/v3",
        "rules": "*",
    },
]
ENV = {
    "NSP_DRIFT_TEAMS_URL": "https://prod-1.westeurope.logic.azure.com/workflows/x/invoke?sig=abcdefghijkl",
    "NSP_DRIFT_SIEM_URL": "https://siem.contoso.example/hooks/nsp",
    "NSP_DRIFT_SIEM_SECRET": HOOK_SECRET,
    "NSP_DRIFT_ADO_TOKEN": "adopat-0123456789abcdefghij",
    "NSP_DRIFT_GITHUB_TOKEN": "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB",
}


@pytest.fixture(autouse=True)
def clean_registry() -> Any:
    redact.forget_secrets()
    yield
    redact.forget_secrets()


def entry(index: int, **change: Any) -> list[dict[str, Any]]:
    """FULL with entry ``index`` changed (a value None removes the key)."""
    data: list[dict[str, Any]] = json.loads(json.dumps(FULL))
    for key, value in change.items():
        if value is None:
            data[index].pop(key, None)
        else:
            data[index][key] = value
    return data


# -- parsing ---------------------------------------------------------------------------------------------


def test_a_full_configuration_parses() -> None:
    secops, siem, boards, issues = parse_destinations(FULL)
    assert secops == DestinationConfig("secops", "teams", 0, options=secops.options)
    assert (secops.min_severity, secops.rules, secops.transitions, secops.digest_below) == (
        Severity.MEDIUM,
        None,
        frozenset(KINDS),
        None,
    )
    assert secops.options == {"url_setting": "NSP_DRIFT_TEAMS_URL"}
    assert (siem.min_severity, siem.digest_below, siem.transitions) == (
        Severity.LOW,
        Severity.MEDIUM,
        frozenset({"opened", "resolved"}),
    )
    assert boards.rules == frozenset({"sftp-enabled", "static-website", EVALUATION_POISONED})
    assert boards.options["tags"] == ("security", "nsp") and boards.options["done_state"] == "Closed"
    assert boards.options["reopen_state"] == "Active"
    assert issues.rules is None and issues.options["api_url"] == "https://github.example.com/api/v3"
    assert [c.where for c in (secops, siem, boards, issues)] == [f"{SETTING}[{i}]" for i in range(4)]
    with pytest.raises(TypeError):
        boards.options["tags"] = ()  # type: ignore[index]


def test_load_inline_from_a_file_or_nothing(tmp_path: Path) -> None:
    assert load_destinations({}) == ()
    assert load_destinations({SETTING: "  "}) == ()
    inline = load_destinations({SETTING: json.dumps(FULL)})
    path = tmp_path / "destinations.json"
    path.write_text(json.dumps(FULL), encoding="utf-8")
    assert load_destinations({SETTING: str(path)}) == inline and len(inline) == 4
    with pytest.raises(DestinationError, match=rf"^{SETTING}: file .* cannot be read$"):
        load_destinations({SETTING: str(tmp_path / "missing.json")})
    with pytest.raises(DestinationError, match=rf"^{SETTING}: not valid JSON \(.* at line 1 column 3\)$"):
        load_destinations({SETTING: "[{]"})
    with pytest.raises(DestinationError, match="expected a JSON array"):
        load_destinations({SETTING: '{"name": "x"}'})


W = SETTING


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "a"}, f"{W}: expected a JSON array of destinations"),
        (["teams"], f"{W}[0]: expected an object"),
        (entry(0, name=None), f"{W}[0].name: expected non-empty text"),
        (entry(0, name="has/slash"), f"{W}[0].name: 'has/slash' must be 1-64 letters"),
        (entry(1, name="secops"), f"{W}[1].name: 'secops' is used twice"),
        (entry(0, type=None), f"{W}[0].type: expected non-empty text"),
        (entry(0, type="pager"), f"{W}[0].type: 'pager' is not one of teams, webhook, azure-devops, github"),
        (entry(0, colour="red"), f"{W}[0]: unknown key(s) colour for type teams"),
        (entry(0, url="https://x"), "unknown key(s) url for type teams; secrets and URLs never go here"),
        (entry(3, token="ghp_x"), "unknown key(s) token for type github; secrets and URLs never go here"),
        (entry(0, url_setting=None), f"{W}[0].url_setting: expected non-empty text (required for type teams)"),
        (entry(1, secret_setting=None), f"{W}[1].secret_setting: expected non-empty text (required for type webhook)"),
        (entry(2, organization=None), f"{W}[2].organization: expected non-empty text"),
        (entry(2, project=None), f"{W}[2].project: expected non-empty text"),
        (entry(2, token_setting=None), f"{W}[2].token_setting: expected non-empty text"),
        (entry(3, repository=None), f"{W}[3].repository: expected non-empty text"),
        (entry(3, token_setting=None), f"{W}[3].token_setting: expected non-empty text"),
        (entry(0, url_setting="https://x/y?sig=1"), f"{W}[0].url_setting: expected the NAME of an app setting"),
        (entry(2, token_setting="my token"), f"{W}[2].token_setting: expected the NAME of an app setting"),
        (entry(1, secret_setting=12), f"{W}[1].secret_setting: expected the NAME of an app setting"),
        (entry(0, rules=["nope", "sftp-enabled"]), f"{W}[0].rules: unknown rule id(s) nope"),
        (entry(0, rules=[]), f'{W}[0].rules: expected "*" or a non-empty list of rule ids'),
        (entry(0, rules="sftp-enabled"), f'{W}[0].rules: expected "*" or a non-empty list'),
        (entry(0, rules=[3]), f"{W}[0].rules: expected a list of non-empty text"),
        (entry(2, rules=["perimeter-access-rules-changed"]), f"{W}[2].rules: perimeter-access-rules-changed has no"),
        (entry(0, min_severity="huge"), f"{W}[0].min_severity: unknown severity 'huge'"),
        (entry(1, digest_below="loud"), f"{W}[1].digest_below: unknown severity 'loud'"),
        (entry(1, digest_below="low"), f"{W}[1].digest_below: must be above min_severity (low)"),
        (entry(2, digest_below="critical"), f"{W}[2].digest_below: not supported for azure-devops"),
        (entry(3, digest_below="critical"), f"{W}[3].digest_below: not supported for github"),
        (entry(1, transitions=["opened", "deleted"]), f"{W}[1].transitions: expected a non-empty list of opened"),
        (entry(1, transitions=[]), f"{W}[1].transitions: expected a non-empty list"),
        (entry(1, transitions="opened"), f"{W}[1].transitions: expected a list of non-empty text"),
        (entry(2, organization="contoso corp"), f"{W}[2].organization: 'contoso corp' is not an Azure DevOps"),
        (entry(2, tags=["a;b"]), f"{W}[2].tags: a tag cannot contain ';'"),
        (entry(2, tags="security"), f"{W}[2].tags: expected a list of non-empty text"),
        (entry(2, work_item_type=""), f"{W}[2].work_item_type: expected non-empty text"),
        (entry(2, base_url="dev.azure.com"), f"{W}[2].base_url: expected an https URL"),
        (entry(2, base_url="http://dev.azure.com"), f"{W}[2].base_url: plain http is only allowed to a loopback"),
        (entry(3, api_url="https://u:p@api.github.com"), f"{W}[3].api_url: the URL must not carry credentials"),
        (entry(3, repository="contoso"), f"{W}[3].repository: expected 'owner/name', got 'contoso'"),
        (entry(3, labels=["ok", ""]), f"{W}[3].labels: expected a list of non-empty text"),
        (entry(3, assignees="octocat"), f"{W}[3].assignees: expected a list of non-empty text"),
    ],
)
def test_every_error_names_the_field(data: Any, message: str) -> None:
    with pytest.raises(DestinationError) as caught:
        parse_destinations(data)
    assert message in str(caught.value)
    assert str(caught.value).startswith(W)


def test_loopback_http_is_allowed_for_local_runs_and_tests() -> None:
    (boards,) = parse_destinations([entry(2, base_url="http://127.0.0.1:8080/")[2]])
    assert boards.options["base_url"] == "http://127.0.0.1:8080"


# -- building senders: secrets come from other app settings ------------------------------------------------


def test_build_resolves_the_named_settings_and_registers_them_as_secrets() -> None:
    configs = parse_destinations(FULL)
    senders, digests = build_senders(configs, ENV)
    assert [type(senders[n]) for n in ("secops", "siem", "boards", "issues")] == [
        TeamsSender,
        WebhookSender,
        AzureDevOpsSender,
        GitHubIssuesSender,
    ]
    assert set(digests) == {"secops", "siem"}  # tasks are never batched
    masked = redact.redact(" ".join(ENV.values()))
    assert all(value not in masked for value in ENV.values())


@pytest.mark.parametrize(
    ("index", "env_change", "message"),
    [
        (3, {"NSP_DRIFT_GITHUB_TOKEN": None}, f"{W}[3].token_setting: app setting NSP_DRIFT_GITHUB_TOKEN is not set"),
        (2, {"NSP_DRIFT_ADO_TOKEN": " "}, f"{W}[2].token_setting: app setting NSP_DRIFT_ADO_TOKEN is not set"),
        (0, {"NSP_DRIFT_TEAMS_URL": None}, f"{W}[0].url_setting: app setting NSP_DRIFT_TEAMS_URL is not set"),
        (1, {"NSP_DRIFT_SIEM_SECRET": None}, f"{W}[1].secret_setting: app setting NSP_DRIFT_SIEM_SECRET is not set"),
        (
            3,
            {"NSP_DRIFT_GITHUB_TOKEN": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/gh/)"},
            f"{W}[3].token_setting: app setting NSP_DRIFT_GITHUB_TOKEN is an unresolved Key Vault reference",
        ),
        (
            0,
            {"NSP_DRIFT_TEAMS_URL": "not a url"},
            f"{W}[0].url_setting: app setting NSP_DRIFT_TEAMS_URL is not an https URL",
        ),
        (
            1,
            {"NSP_DRIFT_SIEM_URL": "http://siem.contoso.example/x"},
            f"{W}[1].url_setting: app setting NSP_DRIFT_SIEM_URL must be https",
        ),
        (
            1,
            {"NSP_DRIFT_SIEM_SECRET": "whsec_%%%notbase64"},
            f"{W}[1].secret_setting: app setting NSP_DRIFT_SIEM_SECRET: a whsec_",
        ),
        (
            1,
            {"NSP_DRIFT_SIEM_SECRET": "short-secret"},
            f"{W}[1].secret_setting: app setting NSP_DRIFT_SIEM_SECRET is too short",
        ),
    ],
)
def test_build_errors_name_the_field_and_the_setting(index: int, env_change: dict[str, Any], message: str) -> None:
    env = {k: v for k, v in {**ENV, **env_change}.items() if v is not None}
    configs = parse_destinations(FULL)
    with pytest.raises(DestinationError) as caught:
        build_senders(configs, env)
    assert str(caught.value).startswith(message)
    for value in env.values():
        if value.strip() and "KeyVault" not in value:
            assert value not in str(caught.value)  # never the value of a setting


def test_a_plain_webhook_secret_of_enough_bytes_is_accepted() -> None:
    (siem,) = parse_destinations([FULL[1]])
    senders, _ = build_senders([siem], {**ENV, "NSP_DRIFT_SIEM_SECRET": "a plain shared secret, 32 chars"})
    assert isinstance(senders["siem"], WebhookSender)


# -- routing --------------------------------------------------------------------------------------------


def config(**values: Any) -> DestinationConfig:
    (parsed,) = parse_destinations([{"name": "d", "type": "teams", "url_setting": "U", **values}])
    return parsed


def task_config(**values: Any) -> DestinationConfig:
    base = {"name": "t", "type": "github", "repository": "o/r", "token_setting": "T"}
    (parsed,) = parse_destinations([{**base, **values}])
    return parsed


def test_severity_floor_rules_and_kinds() -> None:
    floor = config(min_severity="high", rules=["sftp-enabled", "files-smb-share"], transitions=["opened", "changed"])
    assert accepts(floor, make_transition("sftp-enabled", "opened"))  # high
    assert not accepts(floor, make_transition("files-smb-share", "opened"))  # medium
    assert not accepts(floor, make_transition("static-website", "opened"))  # rule not listed
    assert not accepts(floor, make_transition("sftp-enabled", "resolved"))  # kind not listed
    assert floor.accepts(make_transition("sftp-enabled")) == accepts(floor, make_transition("sftp-enabled"))


def test_a_finding_that_fell_below_the_floor_is_still_news_there() -> None:
    floor = config(min_severity="high")
    fell = make_transition("sftp-enabled", "changed", severity="medium", before={"severity": "high", "summary": "s"})
    assert accepts(floor, fell)
    rose = make_transition("files-smb-share", "changed", severity="medium", before={"severity": "low", "summary": "s"})
    assert not accepts(floor, rose)


def test_task_destinations_close_what_they_opened_and_skip_perimeter_changes() -> None:
    tasks, teams = task_config(min_severity="high"), config(min_severity="high")
    resolved_low = make_transition("files-smb-share", "resolved", severity="low")
    assert accepts(tasks, resolved_low) and not accepts(teams, resolved_low)
    for rule in PSEUDO_RULES:
        assert not accepts(tasks, make_transition(rule, "changed"))
        assert accepts(teams, make_transition(rule, "changed"))  # these samples are high


@pytest.mark.parametrize("rule", [EVALUATION_POISONED, EVALUATION_FAILING])
def test_operator_alerts_bypass_the_floor_and_digests(rule: str) -> None:
    quiet = config(min_severity="critical")
    poison = make_transition(rule, "opened", severity="low")
    assert accepts(quiet, poison)
    digesting = config(min_severity="info", digest_below="high")
    assert not is_digest(digesting, poison)
    assert not accepts(config(rules=["sftp-enabled"]), poison)


def test_digest_below() -> None:
    siem = config(min_severity="low", digest_below="high")
    assert is_digest(siem, make_transition("files-smb-share"))  # medium
    assert not is_digest(siem, make_transition("sftp-enabled"))  # high
    assert not is_digest(config(), make_transition("files-smb-share"))
    assert siem.is_digest(make_transition("files-smb-share"))


def test_every_known_rule_can_be_routed() -> None:
    assert (
        set(ALL_RULES)
        == KNOWN_RULES
        == {
            *RULES_BY_ID,
            *PSEUDO_RULES,
            EVALUATION_POISONED,
            EVALUATION_FAILING,
            SWEEP_HEARTBEAT,
        }
    )


@pytest.mark.parametrize("rule", [EVALUATION_POISONED, EVALUATION_FAILING, SWEEP_HEARTBEAT])
def test_operator_alerts_are_operator_events_with_a_reason(rule: str) -> None:
    """Both operator alerts (a poisoned message, a window that keeps failing) are announced as
    operator events and explain themselves; neither is mistaken for a storage finding."""
    from shared.adapters.notify.webhook import event_type
    from shared.core.notify.explain import why_and_how

    assert event_type(make_transition(rule, "opened")) == "com.nspdrift.operator.opened"
    why, how = why_and_how(rule)
    assert why and how
    every = config(min_severity="info")
    assert all(accepts(every, make_transition(rule, kind)) for rule in ALL_RULES for kind in KINDS)


@given(
    st.dictionaries(
        st.sampled_from(["transition", "rule", "severity", "before"]),
        st.one_of(
            st.none(), st.text(max_size=20), st.integers(), st.dictionaries(st.text(max_size=5), st.text(max_size=5))
        ),
    )
)
def test_routing_never_raises_on_odd_payloads(payload: dict[str, Any]) -> None:
    for destination in (config(), task_config(), config(min_severity="info", digest_below="high")):
        assert accepts(destination, payload) in (True, False)
        assert is_digest(destination, payload) in (True, False)


# -- digests ----------------------------------------------------------------------------------------------


def test_digest_card_and_payload_for_a_destination() -> None:
    secops, siem = parse_destinations(FULL[:2])
    batch = [make_transition(rule, kind) for rule in ALL_RULES for kind in KINDS] * 10
    card = build_digest_card(batch, secops.name)
    assert card_bytes(card) < MAX_CARD_BYTES
    content = card["attachments"][0]["content"]
    assert content["body"][0]["items"][0]["text"] == f"nsp-drift digest · {len(batch)} change(s)"
    assert "secops" in content["body"][0]["items"][1]["text"]
    event = build_digest_event(siem.name, batch[:5], 1_790_000_000)
    assert event["type"] == "com.nspdrift.digest" and event["specversion"] == "1.0" and event["source"] == "nsp-drift"
    assert event["data"]["count"] == 5 and event["data"]["transitions"] == batch[:5]
    assert event["time"] == "2026-09-21T14:13:20Z" and event["subject"] == "siem"
    assert build_digest_event("siem", list(reversed(batch[:5])), 0)["id"] == event["id"]
