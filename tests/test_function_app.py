"""The function app as the worker sees it: indexed once, bindings asserted, functions invoked
with official sample events decoded by the azure-functions converters, against a real Azurite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from shared.adapters.queue import decode_message
from shared.core.changes import Transition
from shared.entrypoints import app as app_module
from tests.azurite import Azurite, unique_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    # get_functions() may be called once per FunctionApp object: once for the whole module.
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def test_indexes_three_functions_with_their_bindings(functions: dict[str, Any]) -> None:
    assert set(functions) == {
        "on_resource_event",
        "evaluate_target",
        "reconcile_sweep",
        "reconcile_full_sweep",
        "status",
    }
    bindings = {name: json.loads(fn.get_function_json())["bindings"] for name, fn in functions.items()}
    assert bindings["on_resource_event"] == [{"direction": "IN", "type": "eventGridTrigger", "name": "event"}]
    (queue,) = bindings["evaluate_target"]
    assert queue["type"] == "queueTrigger" and queue["queueName"] == "nsp-drift-evaluations"
    assert queue["connection"] == "AzureWebJobsStorage"
    (timer,) = bindings["reconcile_sweep"]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "%NSP_DRIFT_SWEEP_SCHEDULE%"
    assert timer["runOnStartup"] is False
    (full,) = bindings["reconcile_full_sweep"]
    assert full["schedule"] == "%NSP_DRIFT_FULL_SWEEP_SCHEDULE%"


def test_import_reads_no_setting_and_builds_no_client() -> None:
    """Indexing must survive a broken configuration: import in a clean process with bad settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NSP_DRIFT", "AzureWebJobs"))}
    env.update({"NSP_DRIFT_COALESCE_SECONDS": "not-a-number", "NSP_DRIFT_SUBSCRIPTIONS": "nope"})
    code = (
        "import sys, function_app\n"
        "prefixes = ('azure.mgmt', 'azure.identity', 'azure.data.tables', 'aiohttp')\n"
        "heavy = [m for m in sys.modules if m.startswith(prefixes)]\n"
        "print(len(function_app.app.get_functions()), heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "5 []"


class Sink:
    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    def emit(self, transitions: Any) -> None:
        self.transitions.extend(transitions)


@pytest.fixture
def app_env(azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    """Settings as local.settings.json would give them, a baseline stored, a collecting sink."""
    from shared.adapters.estate import Estate
    from shared.core.config import RulesConfig
    from shared.entrypoints.replay import record_baseline_estate
    from shared.entrypoints.settings import load_settings

    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("NSP_DRIFT_SUBSCRIPTIONS", SUB)
    monkeypatch.setenv("NSP_DRIFT_COALESCE_SECONDS", "0")
    monkeypatch.setenv("NSP_DRIFT_STATE_TABLE_PREFIX", unique_name("fa"))
    monkeypatch.setenv("NSP_DRIFT_ESTATE", str(SAMPLES / "estate-changed.json"))
    sink = Sink()
    context = app_module.build_context(load_settings(), sink=sink)
    context.queue.queue_name = unique_name("q")  # isolate this test's messages
    record_baseline_estate(Estate.load(SAMPLES / "estate.json"), context.store, RulesConfig())
    app_module.reset_context(context)
    yield sink
    app_module.reset_context(None)


def decode(payload: dict[str, Any]) -> Any:
    return EventGridEventInConverter.decode(Datum(json.dumps(payload), "json"), trigger_metadata={})


def receive_all(context: Any) -> list[str]:
    """Read the queue as the Functions host does: base64-decoded message bodies."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    client = QueueClient.from_connection_string(
        os.environ["AzureWebJobsStorage"],
        context.queue.queue_name,
        message_decode_policy=TextBase64DecodePolicy(),
    )
    messages = list(client.receive_messages(max_messages=32, visibility_timeout=60))
    for message in messages:
        client.delete_message(message)
    return [m.content for m in messages]


@pytest.mark.azurite
def test_event_to_queue_to_transitions(functions: dict[str, Any], app_env: Sink) -> None:
    events = json.loads((SAMPLES / "events.json").read_text())
    handler = functions["on_resource_event"].get_user_function()
    for payload in events:
        handler(decode(payload))
    context = app_module.context()
    bodies = receive_all(context)
    targets = {decode_message(b)[0].key for b in bodies}
    assert len(bodies) == len(targets) == 4  # one message per coalescing window
    evaluate = functions["evaluate_target"].get_user_function()
    for body in bodies:
        evaluate(QueueMessage(id="m", body=body.encode(), dequeue_count=1))
    rules = sorted({t.rule_id for t in app_env.transitions})
    assert "sftp-enabled" in rules and "perimeter-access-rules-changed" in rules and "unmanaged-disk" in rules
    # The same message delivered twice: the window is already claimed, nothing happens.
    count = len(app_env.transitions)
    evaluate(QueueMessage(id="m", body=bodies[0].encode(), dequeue_count=2))
    assert len(app_env.transitions) == count


@pytest.mark.azurite
def test_cloud_event_sample_with_capital_specversion_is_accepted(functions: dict[str, Any], app_env: Sink) -> None:
    corpus = (
        ROOT
        / "tests"
        / "corpus"
        / "eventgrid-Microsoft.Resources"
        / "cloud-events-schema"
        / "resource_delete_success.json"
    )
    sample = json.loads(corpus.read_text())
    sample["subject"] = sample["data"]["resourceUri"] = (
        f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/stcontosooutside01"
    )
    decoded = decode(sample)
    assert isinstance(decoded, func.EventGridEvent) and decoded.event_type is None  # the binding's view
    functions["on_resource_event"].get_user_function()(decoded)
    bodies = receive_all(app_module.context())
    assert [decode_message(b)[0].resource_id.rsplit("/", 1)[-1] for b in bodies] == ["stcontosooutside01"]


@pytest.mark.azurite
def test_malformed_event_is_logged_not_raised(
    functions: dict[str, Any], app_env: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    bad = func.EventGridEvent(
        id="bad-1",
        data="not an object",
        topic="/subscriptions/x",
        subject="",
        event_type="Microsoft.Resources.ResourceWriteSuccess",
        event_time=None,
        data_version="2",
    )
    functions["on_resource_event"].get_user_function()(bad)
    assert any("bad-1" in r.getMessage() for r in caplog.records)


def drain(functions: dict[str, Any]) -> list[str]:
    """Run every queued message through the queue trigger until the queue is empty; the kinds."""
    evaluate = functions["evaluate_target"].get_user_function()
    kinds: list[str] = []
    for _ in range(10):
        bodies = receive_all(app_module.context())
        if not bodies:
            break
        for body in bodies:
            kinds.append(json.loads(body).get("work", {}).get("kind", "window"))
            evaluate(QueueMessage(id="m", body=body.encode(), dequeue_count=1))
    return kinds


@pytest.mark.azurite
def test_sweep_timer_reconciles(functions: dict[str, Any], app_env: Sink) -> None:
    """The timer only plans (one message per subscription); the queue trigger lists one page per
    sweep message and evaluates its accounts (issue 12: no invocation does the whole sweep)."""
    functions["reconcile_full_sweep"].get_user_function()(TimerRequest(past_due=False))
    assert app_env.transitions == []
    kinds = drain(functions)
    assert kinds == ["sweep"]  # the sample's 15 accounts fit one page, evaluated by its message
    assert {t.rule_id for t in app_env.transitions} >= {
        "sftp-enabled",
        "unmanaged-disk",
        "object-replication",
    }


@pytest.mark.azurite
def test_graph_sweep_timer_reads_only_changed_summaries(functions: dict[str, Any], app_env: Sink) -> None:
    functions["reconcile_sweep"].get_user_function()(TimerRequest(past_due=True))
    assert drain(functions) == ["sweep", "accounts"]
    # The one summary that changed (SFTP) and the account whose VM no longer keeps VHDs in it (the
    # vhd-vms query; its summary is unchanged).
    assert {t.rule_id for t in app_env.transitions} == {"sftp-enabled", "unmanaged-disk"}
