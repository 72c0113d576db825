"""The ``eventgrid`` destination: the webhook's CloudEvents published through the real
``azure.eventgrid.EventGridPublisherClient`` to a loopback HTTPS Event Grid (tests/eventgrid_receiver.py),
which checks what the service checks: path, api-version, content type and credential."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.notify.destinations import SETTING_KEYS, DestinationError, build_senders, parse_destinations
from shared.adapters.notify.eventgrid import (
    CONTENT_TYPE,
    SCOPE,
    EventGridSender,
    EventTooLargeError,
    batches,
    fit_event,
    topic_endpoint,
    wire_bytes,
)
from shared.adapters.notify.http import RetrySettings
from shared.adapters.notify.webhook import build_event
from shared.core.changes import PERIMETER_RULES_CHANGED
from shared.core.notify import limits, redact
from shared.core.notify.base import Delivery, DeliveryStatus
from shared.service.dispatch import Dispatcher
from tests.eventgrid_receiver import (
    CUSTOM_TOPIC_API_VERSION,
    NAMESPACE_API_VERSION,
    EventGridReceiver,
    receiving,
)
from tests.fakes.transitions import make_transition

ROOT = Path(__file__).resolve().parents[1]
KEY = "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZmdoaWo="  # the shape of an Event Grid access key
FAST = RetrySettings(attempts=4, max_total_seconds=10, initial=0.01, max_wait=0.05, max_retry_after=2)
NOW = 1_790_000_000.0


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    redact.forget_secrets()
    yield
    redact.forget_secrets()


@pytest.fixture
def trust(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Trust a receiver's CA the way a private deployment would (requests reads REQUESTS_CA_BUNDLE)."""

    def use(receiver: EventGridReceiver) -> EventGridReceiver:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", receiver.ca_path)
        return receiver

    return use


class FakeCredential:
    """A TokenCredential: what ManagedIdentityCredential is to the SDK client."""

    def __init__(self, token: str = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJldmVudGdyaWQifQ.c2lnbmF0dXJl") -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def delivery(rule: str = "sftp-enabled", kind: str = "opened", key: str = "idem-1", **override: Any) -> Delivery:
    return Delivery("bus", key, make_transition(rule, kind, **override))


def expected_event(item: Delivery) -> dict[str, Any]:
    return build_event(item.transition, item.idempotency_key, NOW)


def same_event(received: dict[str, Any], sent: dict[str, Any]) -> bool:
    """Equal but for ``time``'s spelling (the custom-topic client writes milliseconds)."""
    from azure.core.messaging import CloudEvent

    times = {CloudEvent.from_dict(e).time for e in (received, sent)}
    return len(times) == 1 and {**received, "time": ""} == {**sent, "time": ""}


# -- configuration -------------------------------------------------------------------------------------


def test_an_eventgrid_destination_parses_and_names_its_settings() -> None:
    configs = parse_destinations(
        [
            {"name": "bus", "type": "eventgrid", "endpoint_setting": "EG_ENDPOINT", "min_severity": "low"},
            {
                "name": "ns",
                "type": "eventgrid",
                "endpoint_setting": "EG_NS_ENDPOINT",
                "topic": "nsp-drift-alerts",
                "key_setting": "EG_NS_KEY",
                "rules": ["sftp-enabled", PERIMETER_RULES_CHANGED],
                "min_severity": "low",
                "digest_below": "medium",
            },
        ]
    )
    bus, ns = configs
    assert bus.options == {"endpoint_setting": "EG_ENDPOINT"}
    assert ns.options == {"endpoint_setting": "EG_NS_ENDPOINT", "topic": "nsp-drift-alerts", "key_setting": "EG_NS_KEY"}
    assert {str(c.options[k]) for c in configs for k in SETTING_KEYS if k in c.options} == {
        "EG_ENDPOINT",
        "EG_NS_ENDPOINT",
        "EG_NS_KEY",
    }
    # Routing keys as for the other alert destinations: perimeter changes are welcome, digests too.
    assert ns.accepts(make_transition(PERIMETER_RULES_CHANGED))
    assert not ns.accepts(make_transition("static-website"))
    assert ns.is_digest(make_transition("sftp-enabled", severity="low"))
    assert not bus.accepts(make_transition("sftp-enabled", severity="info"))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "NSP_DRIFT_DESTINATIONS[0].endpoint_setting: expected non-empty text (required for type eventgrid)"),
        ({"endpoint_setting": "https://t.westeurope-1.eventgrid.azure.net/api/events"}, "expected the NAME of an app"),
        ({"endpoint_setting": "EG", "key_setting": KEY}, "NSP_DRIFT_DESTINATIONS[0].key_setting: expected the NAME"),
        ({"endpoint_setting": "EG", "topic": "a/b"}, "NSP_DRIFT_DESTINATIONS[0].topic: 'a/b' is not an Event Grid"),
        ({"endpoint_setting": "EG", "key": "x"}, "unknown key(s) key for type eventgrid; secrets and URLs never go"),
    ],
)
def test_configuration_errors_name_the_field(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(DestinationError) as caught:
        parse_destinations([{"name": "bus", "type": "eventgrid", **entry}])
    assert message in str(caught.value)
    assert KEY not in str(caught.value)


def test_build_reads_the_settings_registers_the_key_and_imports_nothing_yet() -> None:
    (config,) = parse_destinations([{"name": "bus", "type": "eventgrid", "endpoint_setting": "EG", "key_setting": "K"}])
    with pytest.raises(DestinationError, match=r"\[0\]\.key_setting: app setting K is not set"):
        build_senders([config], {"EG": "https://t.westeurope-1.eventgrid.azure.net/api/events"})
    with pytest.raises(DestinationError, match="must be the topic endpoint alone"):
        build_senders([config], {"EG": "https://t.westeurope-1.eventgrid.azure.net/api/events?code=1", "K": KEY})
    senders, digests = build_senders([config], {"EG": "https://t.westeurope-1.eventgrid.azure.net/", "K": KEY})
    sender = senders["bus"]
    assert isinstance(sender, EventGridSender) and set(digests) == {"bus"}
    assert sender.endpoint == "https://t.westeurope-1.eventgrid.azure.net/api/events"
    assert sender.topic is None and sender.auth == "access key"
    assert redact.redact(f"key {KEY}") == "key ***"
    (identity,) = parse_destinations([{"name": "bus", "type": "eventgrid", "endpoint_setting": "EG", "topic": "t1x"}])
    senders, _ = build_senders([identity], {"EG": "https://ns.westeurope-1.eventgrid.azure.net"})
    assert senders["bus"].auth == "Microsoft Entra token"  # type: ignore[attr-defined]
    assert senders["bus"].endpoint == "https://ns.westeurope-1.eventgrid.azure.net"  # type: ignore[attr-defined]


def test_nothing_imports_azure_eventgrid_until_a_send() -> None:
    code = (
        "import sys, json\n"
        "import function_app, shared.entrypoints.app\n"
        "import shared.adapters.notify.destinations as d, shared.adapters.notify.eventgrid\n"
        "configs = d.parse_destinations(json.loads(sys.argv[1]))\n"
        "d.build_senders(configs, {'EG': 'https://t.westeurope-1.eventgrid.azure.net/api/events'})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('azure.eventgrid', 'azure.identity'))))\n"
    )
    config = json.dumps([{"name": "bus", "type": "eventgrid", "endpoint_setting": "EG"}])
    out = subprocess.run(
        [sys.executable, "-c", code, config], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_topic_endpoints() -> None:
    assert topic_endpoint("https://t.x-1.eventgrid.azure.net", None) == "https://t.x-1.eventgrid.azure.net/api/events"
    assert topic_endpoint("https://t.x-1.eventgrid.azure.net/api/events/", None).endswith(".net/api/events")
    assert topic_endpoint("https://ns.x-1.eventgrid.azure.net/", "alerts") == "https://ns.x-1.eventgrid.azure.net"


# -- the requests Event Grid accepts -------------------------------------------------------------------------


def _check_request(receiver: EventGridReceiver, path: str, version: str) -> dict[str, str]:
    (request,) = receiver.requests
    assert request.status == 200, request.reason
    assert request.method == "POST" and request.path == path
    assert request.query["api-version"] == [version]
    content_type = request.headers["content-type"]
    assert content_type.split(";")[0] == "application/cloudevents-batch+json"
    assert content_type == CONTENT_TYPE  # charset=utf-8 follows
    return request.headers


def test_custom_topic_with_an_access_key(trust: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    item = delivery()
    with receiving(key=KEY) as receiver:
        trust(receiver)
        sender = EventGridSender("bus", receiver.endpoint, key=KEY, retry=FAST, clock=lambda: NOW)
        outcome = sender.send(item, None)  # type: ignore[arg-type]
    assert outcome.ok and outcome.status == 200
    headers = _check_request(receiver, "/api/events", CUSTOM_TOPIC_API_VERSION)
    assert headers["aeg-sas-key"] == KEY and "authorization" not in headers
    (event,) = receiver.events
    assert same_event(event, expected_event(item))  # exactly the webhook's CloudEvent
    assert event["id"] == "idem-1" and event["type"] == "com.nspdrift.finding.opened"
    # The SDK hands the per-call retry options to its event model too; those warnings are dropped.
    assert "is not a known attribute" not in caplog.text


def test_namespace_topic_with_an_access_key(trust: Any) -> None:
    item = delivery(PERIMETER_RULES_CHANGED, "changed")
    with receiving(topic="nsp-alerts", key=KEY) as receiver:
        trust(receiver)
        sender = EventGridSender("ns", receiver.endpoint, topic="nsp-alerts", key=KEY, retry=FAST, clock=lambda: NOW)
        assert sender.send(item, None).ok  # type: ignore[arg-type]
    headers = _check_request(receiver, "/topics/nsp-alerts:publish", NAMESPACE_API_VERSION)
    assert headers["authorization"] == f"SharedAccessKey {KEY}" and "aeg-sas-key" not in headers
    (event,) = receiver.events
    assert event == expected_event(item) and event["type"] == "com.nspdrift.perimeter.changed"


@pytest.mark.parametrize("topic", [None, "nsp-alerts"])
def test_managed_identity_sends_a_bearer_token_for_event_grid(trust: Any, topic: str | None) -> None:
    credential = FakeCredential()
    with receiving(topic=topic, token=credential.token) as receiver:
        trust(receiver)
        sender = EventGridSender("bus", receiver.endpoint, topic=topic, credential=credential, retry=FAST)
        assert sender.auth == "Microsoft Entra token"
        assert sender.send(delivery(), None).ok  # type: ignore[arg-type]
        assert sender.send(delivery(key="idem-2"), None).ok  # type: ignore[arg-type]
    assert [r.status for r in receiver.requests] == [200, 200]
    for request in receiver.requests:
        assert request.headers["authorization"] == f"Bearer {credential.token}"
        assert "aeg-sas-key" not in request.headers
    assert credential.scopes[0] == (SCOPE,)
    assert len(credential.scopes) == 1  # the token is cached by the client between sends
    assert [e["id"] for e in receiver.events] == ["idem-1", "idem-2"]


def test_a_wrong_key_is_a_permanent_failure_that_never_shows_the_key(
    trust: Any, caplog: pytest.LogCaptureFixture
) -> None:
    redact.register_secret(KEY)  # what build_senders does for the key setting
    redact.install_log_redaction()
    caplog.set_level(logging.DEBUG)
    wrong = KEY[::-1]
    redact.register_secret(wrong)
    with receiving(key=KEY) as receiver:
        trust(receiver)
        sender = EventGridSender("bus", receiver.endpoint, key=wrong, retry=FAST)
        outcome = sender.send(delivery(), None)  # type: ignore[arg-type]
    assert not outcome.ok and outcome.status == 401 and not outcome.retryable
    assert "Event Grid topic bus: HTTP 401" in outcome.error
    assert len(receiver.requests) == 1  # a 401 is not retried
    for text in (outcome.error, caplog.text, *(r.getMessage() for r in caplog.records)):
        assert wrong not in text and KEY not in text


# -- retries: azure-core's policy is the one layer ---------------------------------------------------------


def test_transient_failures_are_retried_by_azure_core(trust: Any) -> None:
    with receiving(key=KEY, fail_first=2) as receiver:
        trust(receiver)
        sender = EventGridSender("bus", receiver.endpoint, key=KEY, retry=FAST)
        assert sender.send(delivery(), None).ok  # type: ignore[arg-type]
    assert [r.status for r in receiver.requests] == [503, 503, 200]
    assert len(receiver.events) == 1


def test_out_of_attempts_hands_the_delivery_back_to_the_outbox(trust: Any) -> None:
    with receiving(key=KEY, fail_first=10) as receiver:
        trust(receiver)
        sender = EventGridSender("bus", receiver.endpoint, key=KEY, retry=FAST)
        outcome = sender.send(delivery(), None)  # type: ignore[arg-type]
    assert not outcome.ok and outcome.retryable and outcome.status == 503
    assert len(receiver.requests) == FAST.attempts


def test_a_long_retry_after_stops_at_once_and_is_handed_on(trust: Any) -> None:
    with receiving(key=KEY, fail_first=10, retry_after="120") as receiver:
        trust(receiver)
        sender = EventGridSender("bus", receiver.endpoint, key=KEY, retry=FAST)
        started = time.monotonic()
        outcome = sender.send(delivery(), None)  # type: ignore[arg-type]
    assert time.monotonic() - started < 60  # it did not sleep the 120 s asked
    assert not outcome.ok and outcome.retryable and outcome.retry_after == 120 and outcome.status == 503
    assert len(receiver.requests) == 1


def test_an_unreachable_topic_is_retryable() -> None:
    sender = EventGridSender("bus", "https://127.0.0.1:9/api/events", key=KEY, retry=FAST)
    outcome = sender.send(delivery(), None)  # type: ignore[arg-type]
    assert not outcome.ok and outcome.retryable and outcome.status is None
    assert outcome.error.startswith("Event Grid topic bus: ServiceRequestError") and KEY not in outcome.error


# -- the 1 MB limit -------------------------------------------------------------------------------------------


def _event(index: int, size: int) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"e{index}", "source": "nsp-drift", "type": "t", "data": "x" * size}


def test_batches_stay_within_the_limit_and_keep_the_order() -> None:
    events = [_event(i, 300_000) for i in range(7)]
    groups = batches(events)
    assert [len(g) for g in groups] == [3, 3, 1]
    assert [e["id"] for g in groups for e in g] == [f"e{i}" for i in range(7)]
    for group in groups:
        assert len(json.dumps(group).encode()) <= limits.EVENTGRID_MAX_BATCH_BYTES
    small = [_event(i, 10) for i in range(500)]
    assert batches(small) == [small]
    assert batches([]) == []


def test_one_event_over_the_limit_is_a_clear_error() -> None:
    with pytest.raises(EventTooLargeError, match=r"event 'big' \(t\) is 1,200,\d{3} bytes on the wire; one Event"):
        batches([_event(0, 10), {**_event(1, 1_200_000), "id": "big"}])
    sender = EventGridSender("bus", "https://127.0.0.1:9/api/events", key=KEY, retry=FAST)
    outcome = sender.publish([_event(0, 1_200_000)])  # nothing is sent (the port is closed anyway)
    assert not outcome.ok and not outcome.retryable
    assert "limits.EVENTGRID_MAX_BATCH_BYTES" in outcome.error


def test_a_huge_transition_is_shortened_to_fit_the_sdk_wire_form() -> None:
    # Non-ASCII text doubles on the SDK's (ASCII-escaped) wire: the webhook's bound alone is not enough.
    transition = make_transition("sftp-enabled", after={"note": "é" * 450_000})
    webhook = build_event(transition, "idem-big", NOW)
    assert "truncated" not in webhook["data"]  # within the webhook's bound as it is
    assert wire_bytes(webhook) > limits.EVENTGRID_MAX_BATCH_BYTES
    event = fit_event(transition, "idem-big", NOW)
    assert wire_bytes(event) + 2 <= limits.EVENTGRID_MAX_BATCH_BYTES
    assert event["data"]["truncated"] is True
    assert {k: event[k] for k in event if k != "data"} == {k: webhook[k] for k in webhook if k != "data"}
    assert event["data"]["key"] == transition["key"] and event["data"]["rule"] == "sftp-enabled"
    small = make_transition()
    assert fit_event(small, "k", NOW) == build_event(small, "k", NOW)


def test_a_digest_goes_out_as_its_own_events_in_requests_under_1_mb(trust: Any) -> None:
    items = [
        Delivery("bus", f"idem-{i}", make_transition("sftp-enabled", after={"blob": "x" * 250_000})) for i in range(6)
    ]
    with receiving(topic="nsp-alerts", key=KEY) as receiver:
        trust(receiver)
        sender = EventGridSender("ns", receiver.endpoint, topic="nsp-alerts", key=KEY, retry=FAST, clock=lambda: NOW)
        assert sender.send_digest(items).ok
    assert len(receiver.requests) == 2 and all(r.status == 200 for r in receiver.requests)
    assert all(len(r.body) <= limits.EVENTGRID_MAX_BATCH_BYTES for r in receiver.requests)
    assert [e["id"] for e in receiver.events] == [f"idem-{i}" for i in range(6)]
    assert receiver.events == [expected_event(item) for item in items]


# -- through the outbox, and the CLI ---------------------------------------------------------------------------


def test_the_outbox_delivers_once_and_retries_later(trust: Any, tmp_path: Path) -> None:
    from shared.adapters.state.sqlite_store import SqliteStateStore

    store = SqliteStateStore(str(tmp_path / "state.sqlite"))
    clock = [NOW]
    try:
        items = [delivery(key=f"idem-{i}") for i in range(3)]
        store.add_deliveries([Delivery(d.destination, d.idempotency_key, d.transition, NOW, 0, NOW) for d in items])
        one_try = RetrySettings(attempts=1, initial=0.01, max_wait=0.01)
        with receiving(key=KEY, fail_first=1) as receiver:
            trust(receiver)
            sender = EventGridSender("bus", receiver.endpoint, key=KEY, retry=one_try)
            dispatcher = Dispatcher(store, {"bus": sender}, clock=lambda: clock[0])
            first = dispatcher.dispatch_due()
            assert (first.sent, first.retried, first.held) == (0, 1, 2)  # the destination is held after a 503
            clock[0] += 3600
            second = dispatcher.dispatch_due()
            assert second.sent == 3
            clock[0] += 3600
            assert dispatcher.dispatch_due().sent == 0  # done is done
        assert sorted(e["id"] for e in receiver.events) == ["idem-0", "idem-1", "idem-2"]
        assert store.count_deliveries(DeliveryStatus.DONE) == 3
    finally:
        store.close()


def test_replay_sample_publishes_every_transition_once(
    trust: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.entrypoints.cli import main

    destinations = tmp_path / "destinations.json"
    destinations.write_text(
        json.dumps(
            [
                {
                    "name": "bus",
                    "type": "eventgrid",
                    "endpoint_setting": "NSP_DRIFT_EVENTGRID_ENDPOINT",
                    "key_setting": "NSP_DRIFT_EVENTGRID_KEY",
                    "min_severity": "info",
                }
            ]
        )
    )
    with receiving(key=KEY) as receiver:
        trust(receiver)
        monkeypatch.setenv("NSP_DRIFT_EVENTGRID_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("NSP_DRIFT_EVENTGRID_KEY", KEY)
        monkeypatch.delenv("NSP_DRIFT_DESTINATIONS", raising=False)
        out, err = io.StringIO(), io.StringIO()
        code = main(["replay", "sample", "--destinations", str(destinations), "--format", "jsonl"], out, err)
    assert code == 0, err.getvalue()
    transitions = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(transitions) > 3
    assert all(r.status == 200 for r in receiver.requests), [r.reason for r in receiver.requests]
    events = receiver.events
    assert len(events) == len(transitions)  # every transition, once
    assert sorted(e["id"] for e in events) == sorted(t["idempotency_key"] for t in transitions)
    by_id = {e["id"]: e for e in events}
    for transition in transitions:
        event = by_id[transition["idempotency_key"]]
        assert event["data"]["key"] == transition["key"] and event["data"]["rule"] == transition["rule"]
        assert event["type"] == f"com.nspdrift.{_category(transition['rule'])}.{transition['transition']}"
    assert KEY not in err.getvalue()


def _category(rule: str) -> str:
    from shared.core.changes import OPERATOR_RULES, PERIMETER_RULES

    return "perimeter" if rule in PERIMETER_RULES else "operator" if rule in OPERATOR_RULES else "finding"


def test_the_bicep_grants_eventgrid_data_sender_on_the_topics_named() -> None:
    main = (ROOT / "infra" / "main.bicep").read_text(encoding="utf-8")
    assert "param eventGridTopicIds array = []" in main  # optional: key-based destinations need no role
    assert "module eventGridSender 'app/eventgrid-sender.bicep' = [" in main
    assert "for topicId in eventGridTopicIds:" in main and "functionPrincipalId: api.outputs.principalId" in main
    sender = (ROOT / "infra" / "app" / "eventgrid-sender.bicep").read_text(encoding="utf-8")
    data_sender = "d5a91429-5739-47e2-a06b-3470a27159e7"  # EventGrid Data Sender (built-in role)
    assert sender.count(f"roleDefinitions', '{data_sender}')") == 2
    assert "'Microsoft.EventGrid/topics@" in sender and "'Microsoft.EventGrid/namespaces@" in sender
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["eventGridTopicIds"]["value"] == "${NSPDRIFT_EVENTGRID_TOPIC_IDS=[]}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert '"type": "eventgrid"' in readme and "EventGrid Data Sender" in readme
    for key in ("endpoint_setting", "key_setting", "`topic`"):
        assert key in readme
