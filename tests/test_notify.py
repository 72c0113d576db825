"""Alerts and tasks reach people exactly once: the sample scenario delivered to loopback servers
standing in for Teams, a signed webhook, Azure DevOps and GitHub; faults; redaction; cards."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.notify import http
from shared.adapters.notify.destinations import DestinationError, load_destinations, parse_destinations
from shared.adapters.notify.teams import MAX_CARD_BYTES, TeamsSender, build_card, build_digest_card
from shared.adapters.notify.webhook import WebhookSender, verify_signature
from shared.core.changes import TransitionKind, transition_to_dict
from shared.core.notify.base import Delivery, DeliveryStatus
from shared.core.state.base import StateStore
from shared.entrypoints.replay import replay
from shared.service.dispatch import Dispatcher
from tests.fakes import FakeAzureDevOps, FakeGitHub, FakeServer, running

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "shared" / "samples"
TEAMS_SIG = "s3cr3tSIGvalue0123456789abcdef"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADO_TOKEN = "adopat-0123456789abcdefghijklmnopqrstuvwxyz"
GH_TOKEN = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"
FAST = http.RetrySettings(attempts=4, max_total_seconds=5, initial=0.01, max_wait=0.05)


@pytest.fixture
def servers() -> Iterator[dict[str, FakeServer]]:
    fakes = {"teams": FakeServer(), "hook": FakeServer(), "ado": FakeAzureDevOps(ADO_TOKEN), "gh": FakeGitHub(GH_TOKEN)}
    with running(*fakes.values()):
        yield fakes


def env_for(fakes: dict[str, FakeServer]) -> dict[str, str]:
    return {
        "TEAMS_URL": f"{fakes['teams'].url}/workflows/abc/triggers/manual/paths/invoke"
        f"?api-version=2016-06-01&sig={TEAMS_SIG}",
        "HOOK_URL": f"{fakes['hook'].url}/hook",
        "HOOK_SECRET": HOOK_SECRET,
        "ADO_TOKEN": ADO_TOKEN,
        "GH_TOKEN": GH_TOKEN,
    }


def destinations_json(fakes: dict[str, FakeServer]) -> str:
    return json.dumps(
        [
            {"name": "secops", "type": "teams", "url_setting": "TEAMS_URL", "min_severity": "medium"},
            {
                "name": "siem",
                "type": "webhook",
                "url_setting": "HOOK_URL",
                "secret_setting": "HOOK_SECRET",
                "min_severity": "info",
            },
            {
                "name": "boards",
                "type": "azure-devops",
                "organization": "contoso",
                "project": "Platform",
                "token_setting": "ADO_TOKEN",
                "min_severity": "high",
                "base_url": fakes["ado"].url,
                "area_path": "Platform\\Security",
            },
            {
                "name": "issues",
                "type": "github",
                "repository": "contoso/platform-security",
                "token_setting": "GH_TOKEN",
                "min_severity": "high",
                "api_url": fakes["gh"].url,
                "labels": ["security"],
            },
        ]
    )


def test_sample_replay_delivers_each_transition_once_per_destination(
    servers: dict[str, FakeServer], tmp_path: Path
) -> None:
    env = {**env_for(servers), "NSP_DRIFT_DESTINATIONS": destinations_json(servers)}
    configs = load_destinations(env)
    state = str(tmp_path / "state.sqlite")
    result = replay(
        SAMPLES / "events.json",
        SAMPLES / "estate-changed.json",
        state_path=state,
        baseline_path=SAMPLES / "estate.json",
        destinations=configs,
        env=env,
    )
    payloads = [transition_to_dict(t) for t in result.transitions]
    expected = {c.name: sum(c.accepts(p) for p in payloads) for c in configs}
    assert result.undelivered == 0
    assert result.deliveries == {k: v for k, v in expected.items() if v}
    # Each receiver got exactly what routing accepted, once.
    assert len(servers["teams"].received) == expected["secops"]
    hooks = servers["hook"].received
    assert len(hooks) == expected["siem"] == len(result.transitions)
    assert len({r.headers["webhook-id"] for r in hooks}) == len(hooks)
    for request in hooks:
        assert verify_signature(HOOK_SECRET, request.headers, request.body)
        event = request.json()
        assert event["specversion"] == "1.0" and event["id"] == request.headers["webhook-id"]
        assert event["type"].startswith("com.nspdrift.")
    # Tasks: high+ findings open one task each, whether opened or changed (the account's existing
    # inbound-rule-too-broad finding, the baseline's, had none and rose to critical); resolved ones
    # close theirs if they had one. One task per finding: the three VHDs would be one.
    ado: Any = servers["ado"]
    gh: Any = servers["gh"]
    catalogue = {p["rule"] for p in payloads} - {"perimeter-access-rules-changed", "perimeter-access-mode-changed"}
    tasked = [
        p
        for p in payloads
        if p["transition"] in {"opened", "changed"} and p["severity"] in {"high", "critical"} and p["rule"] in catalogue
    ]
    assert sorted(p["rule"] for p in tasked) == ["inbound-rule-too-broad", "sftp-enabled"]
    assert len(ado.items) == len(gh.issues) == len(tasked)
    assert all("nsp-drift" in i["fields"]["System.Tags"] for i in ado.items.values())
    assert all(issue["state"] == "open" for issue in gh.issues.values())

    # The same scenario again (a full re-delivery): nothing new is sent anywhere.
    before = {name: len(s.received) for name, s in servers.items()}
    again = replay(
        SAMPLES / "events.json", SAMPLES / "estate-changed.json", state_path=state, destinations=configs, env=env
    )
    assert again.transitions == [] and again.deliveries == {}
    assert {name: len(s.received) for name, s in servers.items()} == before


def test_resolution_closes_the_task_and_redelivery_never_opens_a_second(
    servers: dict[str, FakeServer], tmp_path: Path
) -> None:
    from shared.adapters.state.sqlite_store import SqliteStateStore

    store = SqliteStateStore(str(tmp_path / "s.sqlite"))
    env = env_for(servers)
    configs = parse_destinations(json.loads(destinations_json(servers)))
    from shared.adapters.notify.destinations import build_senders

    senders, digests = build_senders(configs, env, retry=FAST)
    dispatcher = Dispatcher(store, senders, digests)
    opened = delivery_for("boards", "opened")
    store.add_deliveries([opened, delivery_for("issues", "opened")])
    dispatcher.dispatch_due()
    # Redelivered "opened" (a new idempotency key, e.g. re-opened after a crash): no second task.
    store.add_deliveries([delivery_for("boards", "opened", key="other"), delivery_for("issues", "opened", key="other")])
    dispatcher.dispatch_due()
    ado: Any = servers["ado"]
    gh: Any = servers["gh"]
    assert len(ado.items) == 1 and len(gh.issues) == 1
    store.add_deliveries([delivery_for("boards", "resolved"), delivery_for("issues", "resolved")])
    report = dispatcher.dispatch_due()
    assert report.sent == 2
    assert ado.items[1]["fields"]["System.State"] == "Done" and ado.items[1]["comments"]
    assert gh.issues[1]["state"] == "closed" and gh.issues[1]["state_reason"] == "completed"
    task = store.get_task("boards", opened.finding_key)
    assert task is not None and task.state == "closed"


def delivery_for(destination: str, kind: str, key: str = "") -> Delivery:
    transition = {
        "transition": kind,
        "rule": "sftp-enabled",
        "severity": "high",
        "title": "SFTP enabled",
        "summary": "SFTP is enabled",
        "resource": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1",
        "perimeter": None,
        "changed_by": "alice",
        "when": "2026-11-24T09:15:02Z",
        "event_ids": ["e1"],
        "before": {},
        "after": {},
        "key": "sftp-enabled|/subscriptions/s/.../st1|",
        "flags": [],
    }
    return Delivery(destination, f"{kind}-{key or 'k'}", transition, created_at=1.0, next_attempt_at=0.0)


def one_sender_dispatch(store: StateStore, sender: Any) -> Dispatcher:
    return Dispatcher(store, {sender.name: sender}, {}, clock=lambda: 1000.0)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    from shared.adapters.state.sqlite_store import SqliteStateStore

    return SqliteStateStore(str(tmp_path / "o.sqlite"))


def test_429_with_retry_after_is_honoured_by_the_single_retry_layer(store: Any) -> None:
    sink = FakeServer()
    sink.script.then(429, {"Retry-After": "1"}).then(429, {"Retry-After": "1"})
    slept: list[float] = []
    retry = http.RetrySettings(attempts=4, max_total_seconds=30, initial=0.01, max_wait=0.05, sleep=slept.append)
    with running(sink):
        sender = WebhookSender("siem", f"{sink.url}/hook", HOOK_SECRET, retry=retry)
        store.add_deliveries([delivery_for("siem", "opened")])
        report = one_sender_dispatch(store, sender).dispatch_due()
    assert report.sent == 1
    assert len(sink.received) == 3  # 429, 429, 200: one layer, no multiplication
    assert slept and min(slept) >= 1.0  # waited at least what Retry-After asked


def test_server_errors_then_recovery_and_4xx_not_retried(store: Any) -> None:
    sink = FakeServer()
    sink.script.then(500).then(503).then(200)
    with running(sink):
        sender = WebhookSender("siem", f"{sink.url}/hook", HOOK_SECRET, retry=FAST)
        store.add_deliveries([delivery_for("siem", "opened")])
        assert one_sender_dispatch(store, sender).dispatch_due().sent == 1
        hits_after_recovery = len(sink.received)
        sink.script.then(400, body=b'{"error": "bad"}')
        store.add_deliveries([delivery_for("siem", "resolved")])
        report = one_sender_dispatch(store, sender).dispatch_due()
    assert hits_after_recovery == 3
    assert report.failed == 1 and len(sink.received) == 4  # the 400 was tried once
    failed = [d for d, _ in [store.get_delivery(delivery_for("siem", "resolved").delivery_id)] if d]  # type: ignore[misc]
    assert failed[0].status is DeliveryStatus.FAILED and failed[0].last_status == 400


def test_outage_keeps_the_delivery_pending_for_the_sweep(store: Any) -> None:
    sink = FakeServer()
    for _ in range(4):
        sink.script.then(503)
    clock = [1000.0]
    with running(sink):
        sender = WebhookSender("siem", f"{sink.url}/hook", HOOK_SECRET, retry=FAST)
        store.add_deliveries([delivery_for("siem", "opened")])
        dispatcher = Dispatcher(store, {"siem": sender}, {}, clock=lambda: clock[0])
        first = dispatcher.dispatch_due()
        assert first.retried == 1 and first.sent == 0
        assert dispatcher.dispatch_due().sent == 0  # not due yet: backoff
        clock[0] += 3600
        assert dispatcher.dispatch_due().sent == 1  # the sweep's run delivers it
    assert store.count_deliveries(DeliveryStatus.DONE) == 1


def test_crash_between_send_and_mark_done_resends_with_the_same_webhook_id(store: Any) -> None:
    """At-least-once send; the receiver dedupes by webhook-id (the idempotency key)."""
    sink = FakeServer()
    clock = [1000.0]

    class CrashAfterSend(Dispatcher):
        def _settle(self, *args: Any, **kwargs: Any) -> None:
            raise SystemExit("worker died after the POST, before marking the delivery done")

    with running(sink):
        sender = WebhookSender("siem", f"{sink.url}/hook", HOOK_SECRET, retry=FAST)
        store.add_deliveries([delivery_for("siem", "opened")])
        with pytest.raises(SystemExit):
            CrashAfterSend(store, {"siem": sender}, {}, clock=lambda: clock[0]).dispatch_due()
        assert Dispatcher(store, {"siem": sender}, {}, clock=lambda: clock[0]).dispatch_due().sent == 0  # leased
        later = Dispatcher(store, {"siem": sender}, {}, clock=lambda: clock[0])
        clock[0] += later.lease + 1  # the lease expired: another worker picks it up
        assert later.dispatch_due().sent == 1
    ids = [r.headers["webhook-id"] for r in sink.received]
    assert len(ids) == 2 and len(set(ids)) == 1  # sent twice, same id: the receiver keeps one


def test_no_secret_reaches_logs_or_errors(store: Any, caplog: pytest.LogCaptureFixture) -> None:
    from shared.core.notify.redact import install_log_redaction

    echo = FakeServer()
    teams_url = f"{echo.url}/workflows/x/invoke?api-version=2016-06-01&sig={TEAMS_SIG}"

    class Echo(FakeServer):
        def handle(self, request: Any) -> tuple[int, dict[str, str], bytes]:
            leak = f"bad request to {teams_url} auth={request.headers.get('authorization')} secret={HOOK_SECRET}"
            return 400, {}, json.dumps({"error": leak}).encode()

    echo = Echo()
    with running(echo):
        teams_url = f"{echo.url}/workflows/x/invoke?api-version=2016-06-01&sig={TEAMS_SIG}"
        install_log_redaction(logging.getLogger())
        caplog.handler.addFilter(__import__("shared.core.notify.redact", fromlist=["SecretFilter"]).SecretFilter())
        with caplog.at_level(logging.DEBUG):
            from shared.core.notify.redact import register_secret

            register_secret(HOOK_SECRET)
            teams = TeamsSender("secops", teams_url, retry=FAST)
            gh_sender = __import__("shared.adapters.notify.github", fromlist=["GitHubIssuesSender"]).GitHubIssuesSender(
                "issues", "o/r", GH_TOKEN, api_url=echo.url, retry=FAST
            )
            store.add_deliveries([delivery_for("secops", "opened"), delivery_for("issues", "opened")])
            Dispatcher(store, {"secops": teams, "issues": gh_sender}, {}).dispatch_due()
            logging.getLogger("probe").error("posting to %s with token %s", teams_url, GH_TOKEN)
    texts = [caplog.text]
    for d, _ in [store.get_delivery(delivery_for(n, "opened").delivery_id) for n in ("secops", "issues")]:  # type: ignore[misc]
        texts.append(d.last_error)
        assert d.last_status == 400
    blob = "\n".join(texts)
    for secret in (TEAMS_SIG, GH_TOKEN, HOOK_SECRET):
        assert secret not in blob
    assert "***" in blob


def transitions_of_sample() -> list[dict[str, Any]]:
    result = replay(SAMPLES / "events.json", SAMPLES / "estate-changed.json", baseline_path=SAMPLES / "estate.json")
    return [transition_to_dict(t) for t in result.transitions]


def test_cards_are_small_and_parse_in_the_reference_parser() -> None:
    payloads = transitions_of_sample()
    huge_rule = {f"addressPrefixes{i}": [f"52.{i % 250}.{j}.0/24" for j in range(5)] for i in range(500)}
    payloads.append({**payloads[-1], "before": {}, "after": huge_rule, "summary": "x" * 5000})
    messages = [build_card(p) for p in payloads]
    messages.append(build_digest_card(payloads * 20, "secops"))
    sizes = [len(json.dumps(m).encode()) for m in messages]
    assert max(sizes) < MAX_CARD_BYTES
    for m in messages:
        text = json.dumps(m)
        assert "Action.Submit" not in text
        assert m["attachments"][0]["content"]["version"] == "1.5"
    cards = [m["attachments"][0]["content"] for m in messages]
    out = subprocess.run(
        ["node", str(ROOT / "tests" / "js" / "validate_card.js")],
        input=json.dumps(cards),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    results = json.loads(out.stdout)
    assert len(results) == len(cards)
    assert [r["problems"] for r in results] == [[] for _ in results]
    (ROOT / "bench").mkdir(exist_ok=True)
    (ROOT / "bench" / "card-sizes.json").write_text(json.dumps({"largest_card_bytes": max(sizes), "cards": len(sizes)}))


def test_the_reference_parser_does_catch_a_broken_card() -> None:
    broken = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "TextBlock", "text": "x", "color": "Purple"}]}
    out = subprocess.run(
        ["node", str(ROOT / "tests" / "js" / "validate_card.js")],
        input=json.dumps([broken]),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert json.loads(out.stdout)[0]["problems"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "expected a JSON array"),
        ([{"type": "teams", "url_setting": "X"}], "[0].name: expected non-empty text"),
        ([{"name": "a", "type": "pager"}], "[0].type: 'pager' is not one of"),
        ([{"name": "a", "type": "teams"}], "[0].url_setting: expected non-empty text"),
        ([{"name": "a", "type": "teams", "url_setting": "X", "url": "https://leak"}], "unknown key(s) url"),
        ([{"name": "a", "type": "teams", "url_setting": "X", "rules": ["nope"]}], "unknown rule id(s) nope"),
        ([{"name": "a", "type": "teams", "url_setting": "X", "min_severity": "huge"}], "[0].min_severity"),
        (
            [{"name": "a", "type": "teams", "url_setting": "X"}, {"name": "a", "type": "teams", "url_setting": "Y"}],
            "used twice",
        ),
    ],
)
def test_destination_config_errors_name_the_field(config: Any, message: str) -> None:
    with pytest.raises(DestinationError) as caught:
        parse_destinations(config)
    assert message in str(caught.value)


def test_missing_secret_setting_is_named_and_routing_filters() -> None:
    from shared.adapters.notify.destinations import build_senders

    (config,) = parse_destinations(
        [
            {
                "name": "a",
                "type": "teams",
                "url_setting": "NSP_DRIFT_TEAMS_URL",
                "min_severity": "high",
                "rules": ["sftp-enabled"],
                "transitions": ["opened"],
                "digest_below": "critical",
            }
        ]
    )
    with pytest.raises(DestinationError, match="app setting NSP_DRIFT_TEAMS_URL is not set"):
        build_senders([config], {})
    accept: Callable[[dict[str, str]], bool] = config.accepts
    assert accept({"transition": "opened", "rule": "sftp-enabled", "severity": "high"})
    assert not accept({"transition": "opened", "rule": "sftp-enabled", "severity": "medium"})
    assert not accept({"transition": "resolved", "rule": "sftp-enabled", "severity": "high"})
    assert not accept({"transition": "opened", "rule": "static-website", "severity": "high"})
    assert config.is_digest({"severity": "high"}) and not config.is_digest({"severity": "critical"})
    assert TransitionKind.OPENED.value == "opened"
