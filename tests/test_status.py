"""The operator's view (issue 14 item 5: ``nsp-drift status``, ``GET /api/status``) and the sweep
heartbeat (item 4): against SQLite and against real Table storage (Azurite), with findings and
deliveries produced by running the pipeline on the bundled sample, never hand-written rows."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from shared.adapters.notify.destinations import parse_destinations
from shared.adapters.state.sqlite_store import SqliteStateStore
from shared.core.changes import SWEEP_HEARTBEAT, Provenance, Target, TargetKind, Transition, TransitionKind
from shared.core.notify.base import DeliveryStatus
from shared.core.state.base import StoreUnavailable
from shared.entrypoints import app as app_module
from shared.entrypoints import cli
from shared.service.dispatch import OutboxSink
from shared.service.heartbeat import ScheduleError, check_heartbeats, intervals_from, schedule_interval, sweep_completed
from shared.service.pipeline import CollectingSink
from shared.service.status import build_status, read_status, render_table, status_to_dict
from tests.azurite import Azurite, unique_name
from tests.fakes import FakeServer, running
from tests.fakes.clock import VirtualClock

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "shared" / "samples"
SUB = "6e1c6f2a-5b7d-4c8e-9f10-2a3b4c5d6e7f"
EVERY_15_MIN = "0 */15 * * * *"
DAILY = "0 30 2 * * *"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
URL_SECRET = "c2VjcmV0LWZ1bmN0aW9uLWtleS0wMTIzNDU2Nzg5"


# -- helpers ---------------------------------------------------------------------------------------------


def findings_of(doc: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...], str]]:
    return {
        (a["account"].lower(), f["rule"], tuple(f["evidence"]), f["severity"])
        for a in doc["findings"]["by_account"]
        for f in a["findings"]
    }


def scanned_findings() -> set[tuple[str, str, tuple[str, ...], str]]:
    """What a scan of the changed sample estate finds: what the replay of its events leaves open."""
    out = io.StringIO()
    assert cli.main(["scan", "--estate", "sample-changed", "--format", "json", "--fail-on", "critical"], out=out) in (
        0,
        1,
    )
    return {
        (f["resource"].lower(), f["rule"], tuple(i["subject"] for i in f["evidence"]), f["severity"])
        for f in json.loads(out.getvalue())["findings"]
    }


def status_json(argv: list[str]) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["status", "--format", "json", *argv], out=out, err=err) == 0, err.getvalue()
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


class Refusing(FakeServer):
    """A webhook receiver that refuses everything (400): its deliveries fail for good."""

    def handle(self, request: Any) -> Any:
        return 400, {}, b'{"error": "schema mismatch"}'


class Unavailable(FakeServer):
    """A webhook receiver that is down (503): its first delivery backs off, the others wait."""

    def handle(self, request: Any) -> Any:
        return 503, {}, b"{}"


def destinations(refusing: FakeServer, down: FakeServer) -> tuple[str, dict[str, str]]:
    config = json.dumps(
        [
            {
                "name": "siem",
                "type": "webhook",
                "url_setting": "SIEM_URL",
                "secret_setting": "HOOK_SECRET",
                "min_severity": "info",
            },
            {
                "name": "ops",
                "type": "webhook",
                "url_setting": "OPS_URL",
                "secret_setting": "HOOK_SECRET",
                "min_severity": "info",
            },
        ]
    )
    env = {
        "SIEM_URL": f"{refusing.url}/hook?code={URL_SECRET}",
        "OPS_URL": f"{down.url}/hook?code={URL_SECRET}",
        "HOOK_SECRET": HOOK_SECRET,
    }
    return config, env


def assert_status_shape(doc: dict[str, Any], transitions: int) -> None:
    """The JSON every consumer relies on, checked against what the run produced."""
    assert set(doc) == {"generated_at", "findings", "deliveries", "targets", "sweeps", "last_sweep"}
    findings = doc["findings"]
    assert findings["open"] == sum(a["open"] for a in findings["by_account"]) == len(findings_of(doc))
    assert findings["accounts"] == len(findings["by_account"])
    assert list(findings["by_severity"]) == ["critical", "high", "medium", "low", "info"]
    for account in findings["by_account"]:
        assert account["name"] == account["account"].rsplit("/", 1)[-1]
        assert sum(account["by_severity"].values()) == account["open"] == len(account["findings"])
        ranks = [["critical", "high", "medium", "low", "info"].index(f["severity"]) for f in account["findings"]]
        assert ranks == sorted(ranks)  # most severe first
    deliveries = doc["deliveries"]
    # Every transition went to both destinations: siem refused them all, ops is down (what a
    # dispatch run tried first backs off, the rest wait behind it).
    failed = deliveries["failed"]["items"]
    pending = deliveries["pending"]["items"]
    assert deliveries["failed"]["count"] + deliveries["pending"]["count"] == 2 * transitions
    assert {d["destination"] for d in failed if d["state"] == "failed"} == {"siem"}
    assert sum(d["state"] == "failed" for d in failed) == transitions
    # One retrying delivery per dispatch run (each run tries ops once, then holds the rest back).
    retrying_ops = [d["destination"] for d in failed if d["state"] == "retrying"]
    assert retrying_ops and set(retrying_ops) == {"ops"}
    assert {d["destination"] for d in pending} == {"ops"} and all(d["state"] == "pending" for d in pending)
    assert all(d["last_status"] == 400 and d["attempts"] == 1 for d in failed if d["state"] == "failed")
    for retrying in (d for d in failed if d["state"] == "retrying"):
        assert retrying["last_status"] == 503 and retrying["attempts"] == 1 and retrying["next_attempt_at"]
    text = json.dumps(doc)
    assert URL_SECRET not in text and HOOK_SECRET not in text


# -- schedules and the heartbeat (pure + SQLite, virtual time) -------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        (EVERY_15_MIN, 900),
        (DAILY, 86400),
        ("0 0 9 * * 1-5", 3 * 86400),  # Friday 09:00 to Monday 09:00
        ("0 0 12 * * Mon", 7 * 86400),
        ("*/5 * * * *", 300),  # five fields: minutes first
        ("00:05:00", 300),  # a TimeSpan
        ("0 0,30 8-17 * * *", 14 * 3600 + 30 * 60),  # 17:30 to 08:00
    ],
)
def test_schedule_interval_is_the_longest_gap(expression: str, seconds: int) -> None:
    assert schedule_interval(expression, date(2026, 12, 7)) == seconds


@pytest.mark.parametrize("expression", ["0 */15 * * *  *  *", "0 61 * * * *", "0 0 0 31 2 *", "every day", ""])
def test_bad_schedules_are_named(expression: str) -> None:
    with pytest.raises(ScheduleError):
        schedule_interval(expression)
    if expression:
        with pytest.raises(ScheduleError, match="NSP_DRIFT_FULL_SWEEP_SCHEDULE"):
            intervals_from([("NSP_DRIFT_FULL_SWEEP_SCHEDULE", expression)])


def heartbeat_alerts(sink: CollectingSink) -> list[Transition]:
    return [t for t in sink.transitions if t.rule_id == SWEEP_HEARTBEAT]


def test_heartbeat_alerts_once_while_stale_and_resolves_on_completion(tmp_path: Path) -> None:
    clock = VirtualClock(start=1_800_000_000.0)
    store = SqliteStateStore(tmp_path / "state.sqlite", clock=clock)
    sink = CollectingSink()
    intervals = {"sweep": 900.0, "full": 86400.0}
    sweep_completed(store, sink, "sweep", 900.0, clock())
    sweep_completed(store, sink, "full", 86400.0, clock())
    clock.advance(2 * 900)  # exactly twice the schedule: not yet stale
    assert check_heartbeats(store, sink, intervals, clock()) == []
    clock.advance(1)
    (opened,) = check_heartbeats(store, sink, intervals, clock())
    assert opened.kind is TransitionKind.OPENED and opened.rule_id == SWEEP_HEARTBEAT
    assert opened.resource_id == "reconcile_sweep" and opened.evidence["intervalSeconds"] == 900
    # Every later run and the status while it stays stale: nothing more.
    for _ in range(5):
        clock.advance(900)
        assert check_heartbeats(store, sink, intervals, clock()) == []
    status = read_status(store, intervals, clock(), sink=sink)
    sweeps = status_to_dict(status)["sweeps"]
    assert sweeps["sweep"]["stale"] is True and sweeps["sweep"]["heartbeat_alert"] is True
    assert sweeps["full"]["stale"] is False and sweeps["full"]["heartbeat_alert"] is False
    assert heartbeat_alerts(sink) == [opened]
    # The sweep completes again: the alert resolves (same finding key and occurrence), once.
    (resolved,) = sweep_completed(store, sink, "sweep", 900.0, clock())
    assert resolved.kind is TransitionKind.RESOLVED and (resolved.key, resolved.occurrence) == (opened.key, 1)
    assert sweep_completed(store, sink, "sweep", 900.0, clock()) == []
    assert check_heartbeats(store, sink, intervals, clock()) == []
    # Stale again later: a new occurrence, so receivers see a new alert (new idempotency key).
    clock.advance(2 * 900 + 1)
    (again,) = check_heartbeats(store, sink, intervals, clock())
    assert again.occurrence == 2 and again.idempotency_key != opened.idempotency_key
    assert len(heartbeat_alerts(sink)) == 3


def test_a_sweep_that_never_ran_is_stale_from_when_the_heartbeat_began_watching(tmp_path: Path) -> None:
    clock = VirtualClock(start=1_800_000_000.0)
    store = SqliteStateStore(tmp_path / "state.sqlite")
    sink = CollectingSink()
    assert check_heartbeats(store, sink, {"full": 86400.0}, clock()) == []  # starts watching
    clock.advance(2 * 86400 + 1)
    (alert,) = check_heartbeats(store, sink, {"full": 86400.0}, clock())
    assert alert.evidence["lastCompleted"] is None and "has not completed since" in alert.summary


class StaleRead:
    """A store whose first get_sweep answers what another run read before: two runs looking at once."""

    def __init__(self, store: SqliteStateStore, snapshot: Any) -> None:
        self.store, self.snapshot = store, snapshot

    def get_sweep(self, kind: str) -> Any:
        if self.snapshot is not None:
            snapshot, self.snapshot = self.snapshot, None
            return snapshot
        return self.store.get_sweep(kind)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class FailingOnce:
    """A sink that vanishes once (the worker dies between the state write and the outbox)."""

    def __init__(self, sink: Any) -> None:
        self.sink, self.failed = sink, False

    def emit(self, transitions: Any) -> None:
        if not self.failed:
            self.failed = True
            raise StoreUnavailable("outbox unreachable")
        self.sink.emit(transitions)


def test_racing_runs_and_a_crash_still_deliver_the_alert_once(tmp_path: Path) -> None:
    clock = VirtualClock(start=1_800_000_000.0)
    store = SqliteStateStore(tmp_path / "state.sqlite")
    routes = parse_destinations([{"name": "ops", "type": "webhook", "url_setting": "X", "secret_setting": "Y"}])
    outbox = OutboxSink(store, routes, clock=clock)
    sweep_completed(store, outbox, "sweep", 900.0, clock())
    clock.advance(3 * 900)
    before = store.get_sweep("sweep")
    # The first run writes the alert but dies before the outbox has it: the row carries it.
    with pytest.raises(StoreUnavailable):
        check_heartbeats(store, FailingOnce(outbox), {"sweep": 900.0}, clock())
    assert store.count_deliveries() == 0
    carried = store.get_sweep("sweep")
    assert carried is not None and len(carried.value.pending_transitions) == 1
    # A second run that read the row before that write loses its conditional write, reads again,
    # records the carried alert, and raises none of its own.
    assert check_heartbeats(StaleRead(store, before), outbox, {"sweep": 900.0}, clock()) == []  # type: ignore[arg-type]
    assert check_heartbeats(store, outbox, {"sweep": 900.0}, clock()) == []
    (delivery,) = store.list_deliveries(DeliveryStatus.PENDING)
    assert delivery.transition["rule"] == SWEEP_HEARTBEAT and delivery.transition["transition"] == "opened"
    after = store.get_sweep("sweep")
    assert after is not None and after.value.pending_transitions == ()


# -- status over SQLite: the sample replayed through the CLI -------------------------------------------------


def test_status_over_sqlite_after_the_sample_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state.sqlite"
    with running(refusing := Refusing(), down := Unavailable()):
        config, env = destinations(refusing, down)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        (tmp_path / "destinations.json").write_text(config)
        out = io.StringIO()
        argv = ["replay", "sample", "--state", str(state), "--baseline", "sample", "--format", "jsonl"]
        assert cli.main([*argv, "--destinations", str(tmp_path / "destinations.json")], out=out) == 0
    transitions = len(out.getvalue().splitlines())
    assert transitions > 0
    monkeypatch.delenv("NSP_DRIFT_DESTINATIONS", raising=False)
    doc = status_json(["--state", str(state)])
    assert findings_of(doc) == scanned_findings()  # what the replay left open is what the estate shows
    assert_status_shape(doc, transitions)
    assert doc["targets"] == [] and doc["last_sweep"] is None
    assert {k: v["last_completed"] for k, v in doc["sweeps"].items()} == {"sweep": None, "full": None}
    # The table: one line per account, the counts, the sections.
    text = io.StringIO()
    assert cli.main(["status", "--state", str(state)], out=text) == 0
    table = text.getvalue()
    assert f"Open findings: {doc['findings']['open']} on {doc['findings']['accounts']} account(s)" in table
    assert f"Failed deliveries: {doc['deliveries']['failed']['count']}" in table
    assert f"Pending deliveries: {doc['deliveries']['pending']['count']}" in table
    assert all(a["name"] in table for a in doc["findings"]["by_account"])
    assert "Last sweep: never" in table and URL_SECRET not in table


def test_status_command_refuses_what_is_not_a_state_file(tmp_path: Path) -> None:
    err = io.StringIO()
    assert cli.main(["status", "--state", str(tmp_path / "missing.sqlite")], out=io.StringIO(), err=err) == 2
    assert err.getvalue() == f"nsp-drift: error: --state: no state file at {tmp_path / 'missing.sqlite'}\n"
    (tmp_path / "junk.sqlite").write_text("not a database, just text " * 100)
    err = io.StringIO()
    assert cli.main(["status", "--state", str(tmp_path / "junk.sqlite")], out=io.StringIO(), err=err) == 2
    assert "is not an nsp-drift state file" in err.getvalue() and err.getvalue().count("\n") == 1


def test_a_corrupt_row_is_named_not_a_traceback(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    assert cli.main(["replay", "sample", "--state", str(state), "--baseline", "sample"], out=io.StringIO()) == 0
    import sqlite3

    with sqlite3.connect(state) as db:
        db.execute('UPDATE accounts SET data = \'{"format": 1, "account_id": 7}\' WHERE rowid = 1')
    err = io.StringIO()
    assert cli.main(["status", "--state", str(state)], out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("nsp-drift: error: the state store holds a row nsp-drift cannot read: account")


def test_build_status_is_pure_and_limits_lists() -> None:
    status = build_status([], [], [], [], [], {}, {}, now=0.0, limit=0)
    doc = status_to_dict(status)
    assert doc["findings"]["open"] == 0 and doc["deliveries"]["pending"]["omitted"] == 0
    assert doc["last_sweep"] is None and doc["sweeps"]["sweep"]["stale"] is None
    assert "Open findings: 0 on 0 account(s)" in render_table(status)


# -- the function app on Azurite: GET /api/status, the CLI on Table storage, the timers' heartbeat ------------


@pytest.fixture(scope="module")
def functions() -> dict[str, Any]:
    """function_app.py indexed as the worker does. get_functions() may be called once per
    FunctionApp object, and other modules index the imported ``function_app``: this module loads
    the same file as a module of its own (a FunctionApp object of its own)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("function_app_for_status_tests", ROOT / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f.get_function_name(): f for f in module.app.get_functions()}


def test_status_function_is_indexed_with_a_function_key(functions: dict[str, Any]) -> None:
    (binding, out) = json.loads(functions["status"].get_function_json())["bindings"]
    assert binding["type"] == "httpTrigger" and binding["route"] == "status"
    assert binding["methods"] == ["GET"] and binding["authLevel"] == "FUNCTION"
    assert out["type"] == "http" and out["direction"] == "OUT"


def get_status(functions: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(method="GET", url="http://localhost:7071/api/status", body=b"")
    response = functions["status"].get_user_function()(request)
    assert response.mimetype == "application/json"
    body: dict[str, Any] = json.loads(response.get_body())
    return response.status_code, body


@pytest.fixture
def app_status(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[VirtualClock, dict[str, str]]]:
    """The function app's settings on Azurite with two misbehaving webhook destinations, the
    sample baseline stored, and a virtual clock in the pipeline."""
    from shared.adapters.estate import Estate
    from shared.core.config import RulesConfig
    from shared.entrypoints.replay import record_baseline_estate
    from shared.entrypoints.settings import load_settings

    with running(refusing := Refusing(), down := Unavailable()):
        config, env = destinations(refusing, down)
        env = {
            **env,
            "AzureWebJobsStorage": azurite.connection_string,
            "NSP_DRIFT_SUBSCRIPTIONS": SUB,
            "NSP_DRIFT_COALESCE_SECONDS": "0",
            "NSP_DRIFT_STATE_TABLE_PREFIX": unique_name("st"),
            "NSP_DRIFT_ESTATE": str(SAMPLES / "estate-changed.json"),
            "NSP_DRIFT_DESTINATIONS": config,
            "NSP_DRIFT_SWEEP_SCHEDULE": EVERY_15_MIN,
            "NSP_DRIFT_FULL_SWEEP_SCHEDULE": DAILY,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        context = app_module.build_context(load_settings())
        clock = VirtualClock(start=1_800_000_000.0)
        context.pipeline = replace(context.pipeline, clock=clock)
        context.queue.queue_name = unique_name("q")
        record_baseline_estate(Estate.load(SAMPLES / "estate.json"), context.store, RulesConfig())
        app_module.reset_context(context)
        try:
            yield clock, env
        finally:
            app_module.reset_context(None)


def run_sample_events(functions: dict[str, Any]) -> int:
    """The sample's events through the Event Grid trigger, then every queued message through the
    queue trigger (which dispatches after each evaluation); the transitions recorded."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    context = app_module.context()
    emitted: list[Transition] = []
    outbox = context.pipeline.outbox

    class Counting:
        def emit(self, transitions: Any) -> None:
            emitted.extend(transitions)
            outbox.emit(transitions)

    context.pipeline = replace(context.pipeline, outbox=Counting())
    for payload in json.loads((SAMPLES / "events.json").read_text()):
        functions["on_resource_event"].get_user_function()(
            EventGridEventInConverter.decode(Datum(json.dumps(payload), "json"), trigger_metadata={})
        )
    queue = QueueClient.from_connection_string(
        context.settings.storage_connection, context.queue.queue_name, message_decode_policy=TextBase64DecodePolicy()
    )
    for _ in range(10):
        messages = list(queue.receive_messages(max_messages=32, visibility_timeout=60))
        if not messages:
            break
        for message in messages:
            queue.delete_message(message)
            functions["evaluate_target"].get_user_function()(
                QueueMessage(id="m", body=message.content.encode(), dequeue_count=1)
            )
    context.pipeline = replace(context.pipeline, outbox=outbox)
    return len({t.idempotency_key for t in emitted})


@pytest.mark.azurite
def test_status_function_and_command_on_table_storage(
    functions: dict[str, Any], app_status: tuple[VirtualClock, dict[str, str]]
) -> None:
    transitions = run_sample_events(functions)
    assert transitions > 0
    code, doc = get_status(functions)
    assert code == 200
    assert findings_of(doc) == scanned_findings()
    assert_status_shape(doc, transitions)
    # The command reads the same Table storage through the same settings: the same JSON.
    cli_doc = status_json([])
    assert {**cli_doc, "generated_at": None, "sweeps": None} == {**doc, "generated_at": None, "sweeps": None}


@pytest.mark.azurite
def test_failing_and_poisoned_targets_show_until_evaluated(
    functions: dict[str, Any], app_status: tuple[VirtualClock, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.adapters.queue import encode_message

    context = app_module.context()
    account = f"/subscriptions/{SUB}/resourceGroups/rg-data/providers/Microsoft.Storage/storageAccounts/stcontososftp01"
    failing, poisoned = Target(TargetKind.ACCOUNT, account), Target(TargetKind.VIRTUAL_MACHINE, account + "-vm")
    for target in (failing, poisoned):
        context.store.add_pending(target, Provenance(event_ids=(f"e-{target.kind}",)), 0.0, context.pipeline.clock())

    class BrokenReads:
        async def read_account(self, account_id: str, skip: Any = ()) -> Any:
            raise PermissionError(f"AuthorizationFailed for {account_id} at https://x/?sig={URL_SECRET}")

    readers = context.readers()
    monkeypatch.setattr(app_module.AppContext, "readers", lambda self: replace(readers, accounts=BrokenReads()))
    # An evaluation that fails inside the pipeline backs off: a failing target.
    functions["evaluate_target"].get_user_function()(QueueMessage(id="a", body=encode_message(failing, 0).encode()))

    # An evaluation whose failure cannot even be recorded: on its last attempt, poisoned.
    class Unreachable:
        def __init__(self, store: Any) -> None:
            self.store = store

        def claim_pending(self, *args: Any) -> Any:
            raise StoreUnavailable("table service returned HTTP 503")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.store, name)

    healthy = context.pipeline
    context.pipeline = replace(healthy, store=Unreachable(context.store))
    with pytest.raises(StoreUnavailable):
        app_module.handle_queue_message(encode_message(poisoned, 0), 5)
    context.pipeline = healthy
    code, doc = get_status(functions)
    assert code == 200
    by_state = {t["state"]: t for t in doc["targets"]}
    assert set(by_state) == {"failing", "poisoned"}
    assert by_state["failing"]["target"] == failing.key and by_state["failing"]["attempts"] == 1
    assert "AuthorizationFailed" in by_state["failing"]["last_error"] and by_state["failing"]["retry_at"]
    assert by_state["poisoned"]["target"] == poisoned.key and by_state["poisoned"]["attempts"] == 5
    assert "HTTP 503" in by_state["poisoned"]["last_error"]
    assert URL_SECRET not in json.dumps(doc)
    # Evaluated since (the windows are gone): neither shows, and the next sweep forgets the record.
    monkeypatch.undo()
    app_status[0].advance(86400 * 2)
    for target in (failing, poisoned):
        app_module.handle_queue_message(encode_message(target, 0), 1)
    code, doc = get_status(functions)
    assert doc["targets"] == []
    functions["reconcile_sweep"].get_user_function()(TimerRequest(past_due=False))
    assert context.store.poisoned() == []  # type: ignore[attr-defined]


@pytest.mark.azurite
def test_heartbeat_through_the_timers_and_the_status(
    functions: dict[str, Any], app_status: tuple[VirtualClock, dict[str, str]]
) -> None:
    clock, _ = app_status
    context = app_module.context()
    sink = CollectingSink()
    outbox = context.pipeline.outbox

    class Both:
        def emit(self, transitions: Any) -> None:
            sink.emit(transitions)
            outbox.emit(transitions)

    context.pipeline = replace(context.pipeline, outbox=Both())
    graph, full = (
        functions["reconcile_sweep"].get_user_function(),
        functions["reconcile_full_sweep"].get_user_function(),
    )
    graph(TimerRequest(past_due=False))
    full(TimerRequest(past_due=False))
    started = clock()
    code, doc = get_status(functions)
    assert code == 200 and doc["sweeps"]["sweep"]["stale"] is False
    assert doc["last_sweep"] == doc["sweeps"]["full"]["last_completed"] is not None
    # The frequent sweep stops; the daily one keeps running: its next run raises ONE alert.
    clock.advance(2 * 900 + 1)
    full(TimerRequest(past_due=False))
    (alert,) = heartbeat_alerts(sink)
    assert alert.kind is TransitionKind.OPENED and alert.resource_id == "reconcile_sweep"
    for _ in range(3):
        clock.advance(900)
        full(TimerRequest(past_due=False))
        code, doc = get_status(functions)
    assert heartbeat_alerts(sink) == [alert]
    assert doc["sweeps"]["sweep"] == {
        "function": "reconcile_sweep",
        "last_completed": doc["sweeps"]["sweep"]["last_completed"],
        "interval_seconds": 900.0,
        "stale": True,
        "heartbeat_alert": True,
    }
    assert doc["sweeps"]["sweep"]["last_completed"] < doc["sweeps"]["full"]["last_completed"]
    # It is routed like the other operator alerts: in the outbox for every destination.
    delivered = {
        d.destination
        for d in context.store.list_deliveries(DeliveryStatus.PENDING)
        if d.transition["rule"] == SWEEP_HEARTBEAT
    } | {
        d.destination
        for d in context.store.list_deliveries(DeliveryStatus.FAILED)
        if d.transition["rule"] == SWEEP_HEARTBEAT
    }
    assert delivered == {"siem", "ops"}
    # The frequent sweep completes again: resolved, once.
    graph(TimerRequest(past_due=False))
    graph(TimerRequest(past_due=False))
    assert [t.kind for t in heartbeat_alerts(sink)] == [TransitionKind.OPENED, TransitionKind.RESOLVED]
    assert clock() > started
    code, doc = get_status(functions)
    assert doc["sweeps"]["sweep"]["stale"] is False and doc["sweeps"]["sweep"]["heartbeat_alert"] is False
    # Nothing runs at all: the status alone raises the alert for each stale sweep, once.
    clock.advance(3 * 86400)
    get_status(functions)
    get_status(functions)
    stale = [t for t in heartbeat_alerts(sink) if t.kind is TransitionKind.OPENED]
    assert sorted(t.resource_id for t in stale[1:]) == ["reconcile_full_sweep", "reconcile_sweep"]


@pytest.mark.azurite
def test_status_function_answers_an_error_when_the_store_is_unreachable(
    functions: dict[str, Any], app_status: tuple[VirtualClock, dict[str, str]]
) -> None:
    context = app_module.context()

    class Down:
        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise StoreUnavailable(
                    f"read nspdriftstate: table service returned HTTP 503 (https://x/?sig={URL_SECRET})"
                )

            return fail

    real = context.store
    context.store = Down()  # type: ignore[assignment]
    try:
        code, doc = get_status(functions)
    finally:
        context.store = real
    assert code == 503 and doc["error"].startswith("state store unavailable: StoreUnavailable: read nspdriftstate")
    assert URL_SECRET not in doc["error"] and "sig=***" in doc["error"]


def test_status_function_answers_an_error_when_misconfigured(
    functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage__tableServiceUri", raising=False)
    app_module.reset_context(None)
    code, doc = get_status(functions)
    assert code == 500 and doc["error"].startswith("nsp-drift is misconfigured: AzureWebJobsStorage")


@pytest.mark.azurite
def test_status_function_names_a_row_it_cannot_read(
    functions: dict[str, Any], app_status: tuple[VirtualClock, dict[str, str]]
) -> None:
    from azure.data.tables import TableServiceClient

    context = app_module.context()
    table = TableServiceClient.from_connection_string(context.settings.storage_connection).get_table_client(
        f"{context.settings.table_prefix}state"
    )
    table.upsert_entity(
        {
            "PartitionKey": "account",
            "RowKey": "f" * 64,
            "AccountId": "stbroken",
            "Enc": "json",
            "Chunks": 1,
            "data0": "{",
        }
    )
    code, doc = get_status(functions)
    assert code == 500
    assert doc["error"].startswith(
        "the state store holds a row nsp-drift cannot read: CodecError: account row stbroken"
    )
