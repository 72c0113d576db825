"""Targets that keep failing: an evaluation that fails backs off (30 s doubling up to a day, its
own retry message queued) and the operators are told once, with the reason; a failure that
cannot even be recorded (state store unreachable) is retried by the host and, after
maxDequeueCount attempts, poisoned, again with one alert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from shared.adapters.estate import Estate, Reply
from shared.adapters.notify.destinations import parse_destinations
from shared.adapters.state.table_store import TableStateStore
from shared.core.changes import EVALUATION_FAILING, EVALUATION_POISONED, Provenance, Target, TargetKind
from shared.core.notify.base import DeliveryStatus
from shared.core.state.base import StoreUnavailable
from shared.core.work import QUEUE_NAME
from shared.entrypoints import app as app_module
from shared.service.dispatch import OutboxSink
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


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class UnreachableClaims:
    """The state store, except that claiming a window fails as an unreachable service does."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def claim_pending(self, *args: Any) -> Any:
        raise StoreUnavailable("claim: table service returned HTTP 503")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def context(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from shared.entrypoints.settings import load_settings

    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("NSP_DRIFT_SUBSCRIPTIONS", SUB)
    monkeypatch.setenv("NSP_DRIFT_STATE_TABLE_PREFIX", unique_name("p"))
    store = TableStateStore.from_connection_string(azurite.connection_string, unique_name("p"))
    routes = parse_destinations([{"name": "ops", "type": "webhook", "url_setting": "U", "secret_setting": "S"}])
    clients = EstateClients(BrokenEstate(json.loads((SAMPLES / "estate.json").read_text())))
    ctx = app_module.build_context(load_settings(), sink=OutboxSink(store, routes), store=store, clients=clients)
    ctx.queue.queue_name = unique_name("q")
    ctx.pipeline = replace(ctx.pipeline, clock=Clock())
    app_module.reset_context(ctx)
    yield ctx
    app_module.reset_context(None)


def evaluate_function() -> Any:
    import function_app  # noqa: F401
    from handlers.evaluate import evaluate_target

    return evaluate_target.build().get_user_function()


BODY = json.dumps({"target": {"kind": "account", "resource_id": ACCOUNT}, "not_before": 0})


@pytest.mark.azurite
def test_a_target_that_keeps_failing_backs_off_and_is_reported_once(
    context: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run = evaluate_function()
    clock = context.pipeline.clock
    target = Target(TargetKind.ACCOUNT, ACCOUNT)
    context.store.add_pending(target, Provenance(event_ids=("e0",)), 0, clock.now)
    delays = []
    for attempt in range(1, 8):
        # Acknowledged every time (no exception for the host): the pipeline queued its own retry.
        run(QueueMessage(id=f"m{attempt}", body=BODY.encode(), dequeue_count=1))
        (marker,) = context.store.failing_pending()
        assert marker.attempts == attempt and "HttpResponseError" in marker.last_error
        delays.append(marker.due - clock.now)
        clock.now = marker.due  # the retry message becomes visible
    assert delays == [30.0 * 2**n for n in range(7)]  # doubling (up to a day)

    alerts = [d for d, _ in context.store.due_deliveries(1e12) if d.transition["rule"] == EVALUATION_FAILING]
    assert len(alerts) == 1  # once, although it failed seven times
    (alert,) = alerts
    assert alert.status is DeliveryStatus.PENDING
    assert "HttpResponseError" in alert.transition["summary"] and "failed 5 time(s)" in alert.transition["summary"]
    assert "failed (5 in a row)" in caplog.text
    assert context.store.claim_pending(target, clock.now, 60.0) is not None  # the window is kept


@pytest.mark.azurite
def test_a_failure_that_cannot_be_recorded_is_retried_by_the_host_and_poisoned_once(
    context: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run = evaluate_function()
    store = context.store
    context.pipeline = replace(context.pipeline, store=UnreachableClaims(store))
    app_module.reset_context(context)
    for round_ in range(2):  # the same failure poisons a second message
        for attempt in range(1, app_module.MAX_DEQUEUE_COUNT + 1):
            with pytest.raises(StoreUnavailable):
                run(QueueMessage(id=f"m{round_}", body=BODY.encode(), dequeue_count=attempt))
    alerts = store.due_deliveries(1e12)
    assert len(alerts) == 1  # once, although two messages were poisoned
    ((delivery, _),) = alerts
    assert delivery.transition["rule"] == EVALUATION_POISONED and delivery.status is DeliveryStatus.PENDING
    assert "StoreUnavailable" in delivery.transition["summary"]
    assert f"{QUEUE_NAME}-poison" in delivery.transition["summary"]
    assert "failed (attempt 5/5)" in caplog.text


def test_host_json_dequeue_count_matches_the_code() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["queues"]["maxDequeueCount"] == app_module.MAX_DEQUEUE_COUNT
