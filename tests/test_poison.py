"""Poison handling: an evaluation that keeps failing goes to the poison queue after
maxDequeueCount attempts, and the operators are told once, with the reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from shared import app as app_module
from shared.adapters.estate import Estate, Reply
from shared.changes import EVALUATION_POISONED, Provenance, Target, TargetKind
from shared.notify.base import DeliveryStatus
from shared.notify.destinations import parse_destinations
from shared.notify.dispatch import OutboxSink
from shared.state.table_store import TableStateStore
from shared.wiring import EstateClients
from tests.azurite import Azurite, unique_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/stcontososftp01"


class BrokenEstate(Estate):
    """ARM answers 500 for one account, every time (a resource ARM cannot serve)."""

    def answer(self, method: str, url: str) -> Reply:
        if "/storageaccounts/stcontososftp01?" in url.lower():
            body = json.dumps({"error": {"code": "InternalServerError", "message": "boom"}}).encode()
            return Reply(500, body, {"Content-Type": "application/json"})
        return super().answer(method, url)


@pytest.fixture
def context(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from shared.settings import load_settings

    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("NSP_DRIFT_SUBSCRIPTIONS", SUB)
    monkeypatch.setenv("NSP_DRIFT_STATE_TABLE_PREFIX", unique_name("p"))
    store = TableStateStore.from_connection_string(azurite.connection_string, unique_name("p"))
    routes = parse_destinations([{"name": "ops", "type": "webhook", "url_setting": "U", "secret_setting": "S"}])
    ctx = app_module.build_context(load_settings(), sink=OutboxSink(store, routes))
    ctx.store = store
    ctx.pipeline.store = store
    ctx.pipeline.clients = EstateClients(BrokenEstate(json.loads((SAMPLES / "estate.json").read_text())))
    app_module.reset_context(ctx)
    yield ctx
    app_module.reset_context(None)


def test_last_attempt_raises_one_operator_alert_with_the_reason(context: Any, caplog: pytest.LogCaptureFixture) -> None:
    import function_app  # noqa: F401
    from handlers.evaluate import evaluate_target

    run = evaluate_target.build().get_user_function()
    target = Target(TargetKind.ACCOUNT, ACCOUNT)
    body = json.dumps({"target": {"kind": "account", "resource_id": ACCOUNT}, "not_before": 0})
    from shared.settings import QUEUE_NAME

    for round_ in range(2):  # the sweep re-queues the lost window: the same failure again
        context.store.add_pending(target, Provenance(event_ids=(f"e{round_}",)), 0, 0)
        for attempt in range(1, app_module.MAX_DEQUEUE_COUNT + 1):
            with pytest.raises(Exception, match=r"InternalServerError|500|HttpResponseError"):
                run(QueueMessage(id=f"m{round_}", body=body.encode(), dequeue_count=attempt))
    alerts = context.store.due_deliveries(1e12)
    assert len(alerts) == 1  # once, although two messages were poisoned
    ((delivery, _),) = alerts
    assert delivery.transition["rule"] == EVALUATION_POISONED and delivery.status is DeliveryStatus.PENDING
    assert (
        "HttpResponseError" in delivery.transition["summary"]
        and f"{QUEUE_NAME}-poison" in delivery.transition["summary"]
    )
    assert "failed (attempt 5/5)" in caplog.text
    assert context.store.claim_pending(target) is not None  # the window is still there for the sweep


def test_host_json_dequeue_count_matches_the_code() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == app_module.MAX_DEQUEUE_COUNT
