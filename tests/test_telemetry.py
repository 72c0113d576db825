"""Operators' telemetry, read back through the OpenTelemetry SDK's in-memory reader and exporter:
the bundled sample's events go through the real function handlers (Event Grid trigger, queue
trigger) over Azurite and the offline estate, deliveries to a loopback webhook; every counter,
gauge and span is compared with what actually happened (the estate's request log, the webhook's
received requests, the sample's correlation ids)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessage
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.adapters import telemetry as tm
from shared.adapters.estate import Estate, Reply
from shared.adapters.telemetry import Telemetry
from shared.entrypoints import app as app_module
from tests.azurite import Azurite, unique_name
from tests.fakes.server import FakeServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"


@dataclass
class Observed:
    reader: InMemoryMetricReader
    spans: InMemorySpanExporter
    webhook: FakeServer
    estate: Any

    def points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        data = self.reader.get_metrics_data()
        found: list[tuple[dict[str, Any], float]] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend((dict(p.attributes or {}), p.value) for p in metric.data.data_points)
        return found

    def total(self, name: str, **match: str) -> float:
        return sum(v for a, v in self.points(name) if all(a.get(k) == m for k, m in match.items()))


class Estate429(Estate):
    """ARM throttles every read of one account (azure-core gives up: retry_total=0 offline)."""

    def answer(self, method: str, url: str) -> Reply:
        if "/storageaccounts/stcontosoclean01?" in url.lower():
            body = json.dumps({"error": {"code": "TooManyRequests", "message": "slow down"}}).encode()
            return Reply(429, body, {"Content-Type": "application/json", "Retry-After": "1"})
        return super().answer(method, url)


def _context(azurite: Azurite, monkeypatch: pytest.MonkeyPatch, estate_class: type[Estate]) -> Iterator[Observed]:
    from shared.core.config import RulesConfig
    from shared.entrypoints.replay import record_baseline_estate
    from shared.entrypoints.settings import load_settings
    from shared.wiring import EstateClients

    webhook = FakeServer().start()
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("NSP_DRIFT_SUBSCRIPTIONS", SUB)
    monkeypatch.setenv("NSP_DRIFT_COALESCE_SECONDS", "0")
    monkeypatch.setenv("NSP_DRIFT_STATE_TABLE_PREFIX", unique_name("tm"))
    monkeypatch.setenv("HOOK_URL", webhook.url)
    monkeypatch.setenv("HOOK_SECRET", "s3cret-value-for-signing")
    destinations = [
        {
            "name": "siem",
            "type": "webhook",
            "url_setting": "HOOK_URL",
            "secret_setting": "HOOK_SECRET",
            "min_severity": "info",  # every transition, so the webhook sees all that were counted
        }
    ]
    monkeypatch.setenv("NSP_DRIFT_DESTINATIONS", json.dumps(destinations))
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(MeterProvider(metric_readers=[reader]), tracers)
    estate = estate_class(json.loads((SAMPLES / "estate-changed.json").read_text()))
    clients = EstateClients(estate, telemetry=telemetry)
    context = app_module.build_context(load_settings(), clients=clients, telemetry=telemetry)
    context.queue.queue_name = unique_name("q")
    context.backlog_interval = 0.0  # measure the outbox after every delivery run
    record_baseline_estate(Estate.load(SAMPLES / "estate.json"), context.store, RulesConfig())
    app_module.reset_context(context)
    try:
        yield Observed(reader, spans, webhook, clients)
    finally:
        app_module.reset_context(None)
        webhook.stop()


@pytest.fixture
def observed(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[Observed]:
    yield from _context(azurite, monkeypatch, Estate)


@pytest.fixture
def throttled(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[Observed]:
    yield from _context(azurite, monkeypatch, Estate429)


def _handlers() -> tuple[Any, Any]:
    import function_app  # noqa: F401
    from handlers.evaluate import evaluate_target
    from handlers.events import on_resource_event

    return on_resource_event.build().get_user_function(), evaluate_target.build().get_user_function()


def _receive_all() -> list[str]:
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    client = QueueClient.from_connection_string(
        os.environ["AzureWebJobsStorage"],
        app_module.context().queue.queue_name,
        message_decode_policy=TextBase64DecodePolicy(),
    )
    messages = list(client.receive_messages(max_messages=32, visibility_timeout=60))
    for message in messages:
        client.delete_message(message)
    return [m.content for m in messages]


def _run_sample(events: list[dict[str, Any]]) -> int:
    on_event, evaluate = _handlers()
    for payload in events:
        on_event(EventGridEventInConverter.decode(Datum(json.dumps(payload), "json"), trigger_metadata={}))
    bodies = _receive_all()
    for body in bodies:
        evaluate(QueueMessage(id="m", body=body.encode(), dequeue_count=1))
    return len(bodies)


def _sample_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads((SAMPLES / "events.json").read_text())
    outside = json.loads(json.dumps(events[0]))
    outside["id"] = "evt-outside-scope"
    outside["topic"] = "/subscriptions/00000000-0000-0000-0000-0000000000ff"
    outside["subject"] = outside["data"]["resourceUri"] = (
        "/subscriptions/00000000-0000-0000-0000-0000000000ff/resourceGroups/rg/providers/"
        "Microsoft.Storage/storageAccounts/stelsewhere01"
    )
    return [*events, outside, events[0]]  # one out of scope, one delivered twice


@pytest.mark.azurite
def test_metrics_count_what_happened(observed: Observed) -> None:
    events = _sample_events()
    windows = _run_sample(events)

    # Events: every one counted once, by outcome; the drops by reason.
    received = observed.total(tm.EVENTS)
    assert received == len(events)
    assert observed.total(tm.EVENTS, outcome="duplicate") >= 1
    dropped = {a["reason"]: v for a, v in observed.points(tm.EVENTS) if a.get("outcome") == "dropped"}
    assert dropped.get("out-of-scope", 0) >= 1 or any("scope" in r for r in dropped), dropped
    assert observed.total(tm.WINDOWS_OPENED) == windows == 4

    # Evaluations: one per window message, all done.
    assert observed.total(tm.EVALUATIONS, kind="window") == windows
    assert observed.total(tm.EVALUATIONS, outcome="done", kind="window") == windows

    # ARM: exactly the requests the estate answered (200, or 404 for what the estate lacks).
    asked = len(observed.estate.log.requests)
    assert observed.total(tm.ARM_REQUESTS) == asked > 0
    assert observed.total(tm.ARM_REQUESTS, status="200") + observed.total(tm.ARM_REQUESTS, status="404") == asked
    assert observed.total(tm.ARM_REQUESTS, method="GET") == asked
    assert observed.total(tm.ARM_THROTTLED) == 0

    # Transitions by kind and rule: what the webhook received, one CloudEvent per transition.
    posted = [r.json() for r in observed.webhook.received if r.method == "POST"]
    assert posted
    cloud_events = [e for body in posted for e in (body if isinstance(body, list) else [body])]
    delivered = Counter((e["data"]["transition"], e["data"]["rule"]) for e in cloud_events)
    counted = Counter({(a["kind"], a["rule"]): v for a, v in observed.points(tm.TRANSITIONS)})
    assert counted == delivered
    assert ("opened", "sftp-enabled") in counted

    # Deliveries by destination and outcome; the outbox is empty afterwards.
    assert observed.total(tm.DELIVERIES, destination="siem", outcome="sent") == len(posted)
    assert observed.points(tm.DELIVERIES_PENDING) == [({}, 0)]  # everything was delivered
    assert observed.points(tm.OLDEST_PENDING_AGE) == [({}, 0.0)]


@pytest.mark.azurite
def test_backlog_gauges_show_what_waits_for_a_destination_that_is_down(observed: Observed) -> None:
    observed.webhook.script.times(1000, 503)  # the destination answers 503 to everything
    _run_sample(_sample_events())
    from shared.core.notify.base import DeliveryStatus

    pending = app_module.context().store.list_deliveries(DeliveryStatus.PENDING)
    assert pending
    ((_, count),) = observed.points(tm.DELIVERIES_PENDING)
    assert count == len(pending)
    ((_, age),) = observed.points(tm.OLDEST_PENDING_AGE)
    assert age >= 0.0
    assert observed.total(tm.DELIVERIES, destination="siem", outcome="retry") >= 1
    assert observed.total(tm.DELIVERIES, destination="siem", outcome="sent") == 0


@pytest.mark.azurite
def test_spans_follow_a_change_by_its_correlation_id(observed: Observed) -> None:
    _run_sample(_sample_events())
    spans = observed.spans.get_finished_spans()
    names = Counter(s.name for s in spans)
    assert names[tm.SPAN_INTAKE] == len(_sample_events())
    assert names[tm.SPAN_EVALUATE] == 4 and names[tm.SPAN_DELIVER] >= 1

    def carrying(name: str, correlation_id: str) -> list[Any]:
        return [
            s
            for s in spans
            if s.name == name and correlation_id in ((s.attributes or {}).get(tm.CORRELATION_IDS) or ())
        ]

    # The SFTP change of the sample: its event, its window's evaluation and its card share the id.
    for name in (tm.SPAN_INTAKE, tm.SPAN_EVALUATE, tm.SPAN_DELIVER):
        assert carrying(name, "corr-sftp-portal-save"), name
    (intake,) = [
        s for s in carrying(tm.SPAN_INTAKE, "corr-nsp-change") if s.attributes and s.attributes.get("event_id")
    ][:1]
    assert intake.attributes[tm.CORRELATION_ID] == "corr-nsp-change"


@pytest.mark.azurite
def test_throttling_and_failed_evaluations_are_counted(throttled: Observed) -> None:
    _run_sample(json.loads((SAMPLES / "events.json").read_text()))
    throttled_reads = [p for _, p in throttled.estate.log.requests if p.lower().endswith("/stcontosoclean01")]
    assert throttled_reads
    assert throttled.total(tm.ARM_THROTTLED) == len(throttled_reads)
    assert throttled.total(tm.ARM_REQUESTS, status="429") == len(throttled_reads)
    assert throttled.total(tm.EVALUATIONS, outcome="retry", kind="window") >= 1


def test_telemetry_off_records_nothing_and_imports_no_sdk() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from shared.adapters.telemetry import Telemetry\n"
        "t = Telemetry.off()\n"
        "t.events(1, 0, {'x': 1}); t.evaluations('done', 'window'); t.backlog(3, 1.0)\n"
        "with t.span('s', ['c']): pass\n"
        "print(t.enabled, [m for m in sys.modules if m.startswith('opentelemetry')])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False []"


def test_application_insights_connection_string_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.entrypoints.settings import SettingsError, load_settings

    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert load_settings(env).appinsights_connection == ""
    good = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"
    settings = load_settings({**env, "APPLICATIONINSIGHTS_CONNECTION_STRING": good})
    assert settings.appinsights_connection == good and good not in repr(settings)
    with pytest.raises(SettingsError, match="APPLICATIONINSIGHTS_CONNECTION_STRING: expected"):
        load_settings({**env, "APPLICATIONINSIGHTS_CONNECTION_STRING": "not-a-connection-string"})


def test_application_insights_receives_metrics_and_spans_and_the_exporter_loads_late() -> None:
    """Cold start: building the providers imports the OpenTelemetry SDK, not the Azure Monitor
    exporter; the first export (the SDK's background thread, here a flush) does, and what it sends
    reaches the ingestion endpoint (a loopback one) as Application Insights' track calls."""
    import subprocess
    import sys

    with FakeServer() as ingestion:
        code = (
            "import sys\n"
            "from shared.adapters.appinsights import application_insights\n"
            "from shared.adapters.telemetry import Telemetry, SPAN_INTAKE\n"
            "m, t = application_insights('InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            f"IngestionEndpoint={ingestion.url}/')\n"
            "tel = Telemetry(m, t); tel.evaluations('done', 'window', 3)\n"
            "with tel.span(SPAN_INTAKE, ['corr-sftp-portal-save']): pass\n"
            "print(any(k.startswith('azure.monitor') for k in sys.modules))\n"
            "m.force_flush(); t.force_flush()\n"
            "print(any(k.startswith('azure.monitor') for k in sys.modules))\n"
        )
        env = {**os.environ, "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}
        out = subprocess.run(
            [sys.executable, "-c", code], check=False, cwd=ROOT, env=env, capture_output=True, text=True
        )
        bodies = [r.body.decode() for r in ingestion.received if r.route == "/v2.1/track"]
    assert out.stdout.split() == ["False", "True"], out.stderr[-2000:]
    assert any('"nsp_drift.evaluations"' in b and '"window"' in b for b in bodies), bodies
    assert any("corr-sftp-portal-save" in b and "nsp_drift.intake" in b for b in bodies), bodies


def test_entra_authentication_string() -> None:
    from shared.adapters.appinsights import entra_client_id

    assert entra_client_id("") is None
    assert entra_client_id("Authorization=AAD") == ""
    assert entra_client_id("Authorization=AAD;ClientId=11111111-2222-3333-4444-555555555555") == (
        "11111111-2222-3333-4444-555555555555"
    )
