"""Storage faults: Azurite stopped and restarted (with --location persistence) mid-scenario.

Nothing pending may be lost, and while storage is down the functions must fail (so Event Grid /
the queue runtime retry) instead of acknowledging work they could not record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessage

from shared.core.state.base import StoreUnavailable
from shared.entrypoints import app as app_module
from tests.azurite import Azurite, start_azurite, unique_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"


class Sink:
    def __init__(self) -> None:
        self.transitions: list[Any] = []

    def emit(self, transitions: Any) -> None:
        self.transitions.extend(transitions)


@pytest.fixture
def persistent_azurite(tmp_path: Path) -> Iterator[Azurite]:
    server = start_azurite(location=tmp_path / "azurite")
    try:
        yield server
    finally:
        server.close()


def decode(payload: dict[str, Any]) -> Any:
    return EventGridEventInConverter.decode(Datum(json.dumps(payload), "json"), trigger_metadata={})


def build(server: Azurite, monkeypatch: pytest.MonkeyPatch, prefix: str, queue: str, sink: Sink) -> Any:
    from shared.adapters.estate import Estate
    from shared.core.config import RulesConfig
    from shared.entrypoints.replay import record_baseline_estate
    from shared.entrypoints.settings import load_settings

    monkeypatch.setenv("AzureWebJobsStorage", server.connection_string)
    monkeypatch.setenv("NSP_DRIFT_SUBSCRIPTIONS", SUB)
    monkeypatch.setenv("NSP_DRIFT_COALESCE_SECONDS", "0")
    monkeypatch.setenv("NSP_DRIFT_STATE_TABLE_PREFIX", prefix)
    monkeypatch.setenv("NSP_DRIFT_ESTATE", str(SAMPLES / "estate-changed.json"))
    context = app_module.build_context(load_settings(), sink=sink)
    context.queue.queue_name = queue
    return context, lambda: record_baseline_estate(Estate.load(SAMPLES / "estate.json"), context.store, RulesConfig())


def messages(server: Azurite, queue: str) -> list[Any]:
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    client = QueueClient.from_connection_string(
        server.connection_string, queue, message_decode_policy=TextBase64DecodePolicy()
    )
    found = list(client.receive_messages(max_messages=32, visibility_timeout=60))
    for message in found:
        client.delete_message(message)
    return found


@pytest.mark.azurite
def test_restart_mid_scenario_loses_nothing(persistent_azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    import function_app  # noqa: F401  (the handlers below are the registered user functions)
    from handlers.evaluate import evaluate_target
    from handlers.events import on_resource_event

    on_event = on_resource_event.build().get_user_function()
    on_message = evaluate_target.build().get_user_function()
    sink = Sink()
    prefix, queue = unique_name("rs"), unique_name("q")
    context, baseline = build(persistent_azurite, monkeypatch, prefix, queue, sink)
    baseline()
    app_module.reset_context(context)
    events = json.loads((SAMPLES / "events.json").read_text())
    try:
        first, rest = events[:5], events[5:]
        for payload in first:
            on_event(decode(payload))

        persistent_azurite.stop()
        # Storage is down: the function must raise so Event Grid retries the delivery.
        with pytest.raises(StoreUnavailable):
            on_event(decode(rest[0]))
        persistent_azurite.start()

        # A fresh process after the restart (same persisted data): the context is rebuilt.
        context, _ = build(persistent_azurite, monkeypatch, prefix, queue, sink)
        app_module.reset_context(context)
        for payload in rest:  # Event Grid redelivers the failed one, then the rest
            on_event(decode(payload))
        pending = messages(persistent_azurite, queue)
        assert len(pending) == 4  # the windows opened before the restart survived it

        # Storage fails again during an evaluation: the message must not be acknowledged.
        persistent_azurite.stop()
        with pytest.raises(StoreUnavailable):
            on_message(QueueMessage(id="m0", body=pending[0].content.encode(), dequeue_count=1))
        persistent_azurite.start()
        context, _ = build(persistent_azurite, monkeypatch, prefix, queue, sink)
        app_module.reset_context(context)
        for message in pending:
            on_message(QueueMessage(id=message.id, body=message.content.encode(), dequeue_count=2))
    finally:
        app_module.reset_context(None)

    found = {(t.kind.value, t.rule_id, t.resource_id.rsplit("/", 1)[-1]) for t in sink.transitions}
    from tests.test_pipeline import EXPECTED_SAMPLE

    assert found == EXPECTED_SAMPLE
    keys = [(t.key, t.kind.value) for t in sink.transitions]
    assert len(keys) == len(set(keys))
