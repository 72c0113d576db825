"""Senders against real HTTP servers on loopback: signed CloudEvents, the one retry layer (counted
in server hits), and the task life cycle on fake Azure DevOps and GitHub APIs that check auth."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import tenacity

from shared.adapters.notify import http
from shared.adapters.notify.devops import AzureDevOpsSender, finding_tag
from shared.adapters.notify.github import GitHubIssuesSender, finding_label
from shared.adapters.notify.webhook import SecretFormatError, WebhookSender, sign, verify_signature
from shared.core.notify.base import Delivery, DeliveryStatus, Outcome
from shared.service.dispatch import Dispatcher
from tests.fakes import FakeAzureDevOps, FakeGitHub, FakeServer
from tests.fakes.clock import VirtualClock
from tests.fakes.transitions import ACCOUNT, MemoryTasks, delivery, make_transition

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADO_TOKEN = "adopat0123456789abcdefghijklmnopqrstuvwxyz0123456789"
GH_TOKEN = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"
NOW = 1_790_000_000.0


class Sleeps:
    """Injected sleep: records what the retry layer asked for (optionally really sleeping, or
    sleeping on a virtual clock)."""

    def __init__(self, real: bool = False, clock: VirtualClock | None = None) -> None:
        self.calls: list[float] = []
        self.real = real
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.clock is not None:
            self.clock.sleep_sync(seconds)
        elif self.real:
            time.sleep(seconds)


def policy(sleeps: Sleeps | None = None, **override: Any) -> http.RetrySettings:
    values: dict[str, Any] = {"attempts": 4, "max_total_seconds": 10.0, "initial": 0.01, "max_wait": 0.05}
    values.update(override)
    return http.RetrySettings(sleep=sleeps or Sleeps(), **values)


@pytest.fixture
def sink() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


def send(sender: Any, item: Delivery, tasks: MemoryTasks) -> Outcome:
    """What the dispatcher does with one delivery: send, then store the task the outcome carries."""
    outcome: Outcome = sender.send(item, tasks)
    if outcome.task is not None:
        tasks.put_task(outcome.task)
    return outcome


# -- webhook: CloudEvents + Standard Webhooks ----------------------------------------------------------


def test_the_signature_reproduces_the_standard_webhooks_test_vector() -> None:
    body = b'{"test": 2432232314}'
    signature = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,bm9wZQ== " + signature,  # several signatures (rotation): any may match
    }
    assert verify_signature(SECRET, headers, body, now=1614265330)


def test_a_plain_secret_is_used_as_utf8_bytes() -> None:
    expected = base64.b64encode(hmac.new(b"plain-secret-value", b"id.1.{}", hashlib.sha256).digest()).decode()
    assert sign("plain-secret-value", "id", 1, b"{}") == f"v1,{expected}"


def test_a_malformed_whsec_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(SecretFormatError) as caught:
        WebhookSender("siem", "http://127.0.0.1:9/hook", "whsec_not*base64!")
    assert "not*base64" not in str(caught.value)


def test_webhook_posts_a_signed_cloudevent(sink: FakeServer) -> None:
    transition = make_transition("sftp-enabled", "opened")
    item = delivery("siem", transition)
    sender = WebhookSender("siem", f"{sink.url}/hook", SECRET, retry=policy(), clock=lambda: NOW)
    outcome = sender.send(item, MemoryTasks())
    assert outcome == Outcome(ok=True, status=200)
    (request,) = sink.received
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert request.headers["webhook-id"] == item.idempotency_key
    assert request.headers["webhook-timestamp"] == str(int(NOW))
    assert verify_signature(SECRET, request.headers, request.body, now=NOW)
    event = request.json()
    assert event == {
        "specversion": "1.0",
        "id": item.idempotency_key,
        "source": "nsp-drift",
        "type": "com.nspdrift.finding.opened",
        "subject": transition["resource"],
        "time": "2026-11-24T11:32:00Z",
        "datacontenttype": "application/json",
        "data": transition,
    }


def test_tampering_breaks_the_signature(sink: FakeServer) -> None:
    sender = WebhookSender("siem", f"{sink.url}/hook", SECRET, retry=policy(), clock=lambda: NOW)
    sender.send(delivery("siem", make_transition()), MemoryTasks())
    (request,) = sink.received
    headers, body = request.headers, request.body
    assert verify_signature(SECRET, headers, body, now=NOW)
    assert not verify_signature(SECRET, headers, body.replace(b'"high"', b'"low"'), now=NOW)
    assert not verify_signature(SECRET, {**headers, "webhook-id": "other"}, body, now=NOW)
    assert not verify_signature(SECRET, {**headers, "webhook-timestamp": str(int(NOW) + 1)}, body, now=NOW)
    assert not verify_signature(
        "whsec_" + base64.b64encode(b"another key of 24 bytes!").decode(), headers, body, now=NOW
    )
    assert not verify_signature(SECRET, headers, body, now=NOW + 301)  # a replay, minutes later
    assert verify_signature(SECRET, headers, body, tolerance=400, now=NOW + 301)
    assert not verify_signature(SECRET, {k: v for k, v in headers.items() if k != "webhook-signature"}, body, now=NOW)


@pytest.mark.parametrize(
    ("rule", "kind", "event_type"),
    [
        ("static-website", "resolved", "com.nspdrift.finding.resolved"),
        ("sftp-enabled", "changed", "com.nspdrift.finding.changed"),
        ("perimeter-access-rules-changed", "changed", "com.nspdrift.perimeter.changed"),
        ("evaluation-poisoned", "opened", "com.nspdrift.operator.opened"),
    ],
)
def test_event_types(sink: FakeServer, rule: str, kind: str, event_type: str) -> None:
    sender = WebhookSender("siem", f"{sink.url}/hook", SECRET, retry=policy(), clock=lambda: NOW)
    sender.send(delivery("siem", make_transition(rule, kind)), MemoryTasks())
    assert sink.received[0].json()["type"] == event_type


def test_a_digest_is_one_signed_cloudevent_with_a_stable_id(sink: FakeServer) -> None:
    sender = WebhookSender("siem", f"{sink.url}/hook", SECRET, retry=policy(), clock=lambda: NOW)
    items = [delivery("siem", make_transition(rule)) for rule in ("sftp-enabled", "static-website", "blob-inventory")]
    assert sender.send_digest(items).ok and sender.send_digest(list(reversed(items))).ok
    first, second = sink.received
    assert verify_signature(SECRET, first.headers, first.body, now=NOW)
    event = first.json()
    assert event["type"] == "com.nspdrift.digest" and event["data"]["count"] == 3
    assert [t["rule"] for t in event["data"]["transitions"]] == ["sftp-enabled", "static-website", "blob-inventory"]
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event["id"]


# -- the retry layer ----------------------------------------------------------------------------------


def test_429_retry_after_is_slept_for_real_and_retried_once(sink: FakeServer) -> None:
    sink.script.then(429, {"Retry-After": "1"})
    sleeps = Sleeps(real=True)
    started = time.monotonic()
    result = http.post_json(f"{sink.url}/hook", {"x": 1}, retry=policy(sleeps))
    elapsed = time.monotonic() - started
    assert result.ok and result.attempts == 2
    assert sink.hits == 2  # one retry layer: 429 then 200, nothing multiplied underneath
    assert sleeps.calls[0] >= 1.0 and elapsed >= 1.0


def test_retry_after_as_an_http_date(sink: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The wall clock stands still for the parse, so the wait is exactly what the date says,
    # however long the machine takes between here and there.
    monkeypatch.setattr(http, "time", SimpleNamespace(time=lambda: NOW))
    when = email.utils.formatdate(NOW + 3, usegmt=True)
    sink.script.then(503, {"Retry-After": when})
    sleeps = Sleeps()
    assert http.post_json(f"{sink.url}/hook", {}, retry=policy(sleeps)).ok
    assert sink.hits == 2 and sleeps.calls == [3.0]


def test_a_retry_after_beyond_the_cap_is_handed_to_the_outbox(sink: FakeServer) -> None:
    sink.script.then(503, {"Retry-After": "120"})
    sleeps = Sleeps()
    result = http.post_json(f"{sink.url}/hook", {}, retry=policy(sleeps, max_retry_after=30))
    outcome = result.outcome()
    assert sink.hits == 1 and sleeps.calls == []  # no sleeping through it in the function
    assert outcome.retryable and outcome.retry_after == 120.0 and outcome.status == 503


def test_server_errors_then_recovery(sink: FakeServer) -> None:
    sink.script.times(2, 500)
    sleeps = Sleeps()
    result = http.post_json(f"{sink.url}/hook", {}, retry=policy(sleeps))
    assert result.ok and result.attempts == 3 and sink.hits == 3
    assert len(sleeps.calls) == 2 and sleeps.calls[1] >= sleeps.calls[0] * 0.5  # backoff with jitter


def test_persistent_5xx_stops_after_the_attempts(sink: FakeServer) -> None:
    sink.script.times(10, 502)
    result = http.post_json(f"{sink.url}/hook", {}, retry=policy())
    assert sink.hits == 4 and result.status == 502 and result.retryable and not result.ok


@pytest.mark.parametrize(("status", "hits"), [(400, 1), (401, 1), (404, 1), (422, 1), (408, 2), (429, 2), (504, 2)])
def test_which_statuses_are_retried(sink: FakeServer, status: int, hits: int) -> None:
    sink.script.then(status, body=b'{"error": "nope"}')
    result = http.post_json(f"{sink.url}/hook", {}, retry=policy())
    assert sink.hits == hits
    if hits == 1:
        outcome = result.outcome()
        assert outcome == Outcome(ok=False, status=status, retryable=False, error=outcome.error)
        assert outcome.error.startswith(f"HTTP {status} from 127.0.0.1")


def test_a_slow_server_times_out_and_is_retried(sink: FakeServer) -> None:
    # The first answer comes after 5 s, far past the 1 s timeout; the retry's answer is immediate
    # (1 s leaves a busy machine ample time for it).
    sink.script.then(200, delay=5.0)
    result = http.post_json(f"{sink.url}/hook", {}, timeout=1.0, retry=policy())
    assert result.ok and sink.hits == 2 and result.attempts == 2


def test_a_refused_connection_is_retried_then_reported() -> None:
    with FakeServer() as gone:
        url = f"{gone.url}/hook"
    sleeps = Sleeps()
    result = http.post_json(url, {}, retry=policy(sleeps))
    assert result.status is None and result.retryable and result.attempts == 4 and len(sleeps.calls) == 3
    assert "127.0.0.1" in result.error


def test_the_total_time_cap_stops_before_a_sleep_would_pass_it(
    sink: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap is on elapsed time. In virtual time (tenacity's clock and the sleeps on one VirtualClock
    # that moves only by the sleeps) the requests themselves take no time, however busy the machine.
    clock = VirtualClock()
    monkeypatch.setattr(tenacity, "time", SimpleNamespace(monotonic=clock, sleep=clock.sleep_sync))
    sleeps = Sleeps(clock=clock)
    sink.script.times(10, 500)
    # Backoff clamped to 0.4 s (no jitter beyond the clamp), cap 1 s: sleeps end at 0.4 and 0.8 s;
    # a third would end at 1.2 s, so it is not started.
    settings = policy(sleeps, attempts=10, initial=0.4, max_wait=0.4, max_total_seconds=1.0)
    result = http.post_json(f"{sink.url}/hook", {}, retry=settings)
    assert sink.hits == 3 and sleeps.calls == [0.4, 0.4]
    assert clock.sleeps == [0.4, 0.4]
    assert result.retryable and result.status == 500


def test_retry_after_parsing() -> None:
    assert http.parse_retry_after("5") == 5.0
    assert http.parse_retry_after("-3") == 0.0
    assert http.parse_retry_after("soon") is None
    assert http.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert http.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    # Only 429/503 carry a hint we honour.
    assert http.HttpResult(500, headers={"retry-after": "999"}).retry_after is None
    assert http.HttpResult(429, headers={"retry-after": "7"}).retry_after == 7.0


def test_one_retry_layer_through_the_dispatcher_and_the_outbox(sink: FakeServer, tmp_path: Path) -> None:
    from shared.adapters.state.sqlite_store import SqliteStateStore

    store = SqliteStateStore(str(tmp_path / "outbox.sqlite"))
    clock = [NOW]
    sender = WebhookSender("siem", f"{sink.url}/hook", SECRET, retry=policy(), clock=lambda: clock[0])
    dispatcher = Dispatcher(store, {"siem": sender}, {}, clock=lambda: clock[0])
    sink.script.times(4, 503, {"Retry-After": "0"}).then(429, {"Retry-After": "0"})
    item = delivery("siem", make_transition(), next_attempt_at=NOW)
    store.add_deliveries([item])
    first = dispatcher.dispatch_due()
    assert first.retried == 1 and sink.hits == 4  # 4 attempts in-process, then the outbox reschedules
    stored = store.get_delivery(item.delivery_id)
    assert stored is not None and stored[0].attempts == 1 and stored[0].last_status == 503
    assert stored[0].next_attempt_at >= NOW + 30
    clock[0] = stored[0].next_attempt_at
    assert dispatcher.dispatch_due().sent == 1
    assert sink.hits == 6  # 429 then 200: still one layer
    done = store.get_delivery(item.delivery_id)
    assert done is not None and done[0].status is DeliveryStatus.DONE
    assert len({r.headers["webhook-id"] for r in sink.received}) == 1  # same id on every attempt


# -- Azure DevOps ---------------------------------------------------------------------------------


@pytest.fixture
def ado() -> Iterator[FakeAzureDevOps]:
    with FakeAzureDevOps(ADO_TOKEN, organization="contoso", project="Platform Security") as server:
        yield server  # type: ignore[misc]


def boards(server: FakeAzureDevOps, token: str = ADO_TOKEN, **options: Any) -> AzureDevOpsSender:
    values: dict[str, Any] = {
        "work_item_type": "User Story",
        "area_path": "Platform Security\\Network",
        "assigned_to": "secops@contoso.com",
        "tags": ("security",),
        "base_url": server.url,
        "retry": policy(),
    }
    values.update(options)
    return AzureDevOpsSender("boards", "contoso", "Platform Security", token, **values)


def routes(server: FakeServer) -> list[str]:
    return [f"{r.method} {r.route.split('/_apis/wit/')[-1]}" for r in server.received]


def test_azure_devops_work_item_life_cycle(ado: FakeAzureDevOps) -> None:
    sender, tasks = boards(ado), MemoryTasks()
    opened = make_transition("sftp-enabled", "opened")
    key = opened["key"]

    outcome = send(sender, delivery("boards", opened), tasks)
    assert outcome.ok and outcome.task is not None
    assert (outcome.task.external_id, outcome.task.state) == ("1", "open")
    assert outcome.task.url.endswith("/_workitems/edit/1")
    assert routes(ado) == ["POST wiql", "POST workitems/$User%20Story"]  # looked for a lost one first
    (create,) = [r for r in ado.received if "/workitems/$" in r.route]
    assert "/contoso/Platform%20Security/" in create.route and create.query["api-version"] == "7.1"
    fields = ado.items[1]["fields"]
    assert fields["System.Title"] == "[nsp-drift] SFTP enabled on a perimeter-protected account: stcontoso01"
    assert "<h3>Why it matters</h3>" in fields["System.Description"] and "How to fix" in fields["System.Description"]
    assert fields["System.Tags"] == f"nsp-drift; {finding_tag(key)}; security"
    assert fields["System.AreaPath"] == "Platform Security\\Network"
    assert fields["System.AssignedTo"] == "secops@contoso.com"
    assert fields["Microsoft.VSTS.Common.Severity"] == "2 - High" and fields["Microsoft.VSTS.Common.Priority"] == 2

    # Re-delivered "opened" (stored ref): no second item, a comment instead.
    assert send(sender, delivery("boards", opened, idempotency_key="again"), tasks).ok
    # The ref is lost (crash between create and store): the tag finds the item again.
    tasks.forget()
    recovered = send(sender, delivery("boards", opened, idempotency_key="again-2"), tasks)
    assert recovered.task is not None and recovered.task.external_id == "1"
    assert list(ado.items) == [1] and len(ado.items[1]["comments"]) == 2

    changed = send(sender, delivery("boards", make_transition("sftp-enabled", "changed")), tasks)
    assert changed.ok and len(ado.items[1]["comments"]) == 3
    assert "severity: low &rarr; high" in ado.items[1]["comments"][-1]

    resolved = send(sender, delivery("boards", make_transition("sftp-enabled", "resolved")), tasks)
    assert resolved.ok and resolved.task is not None and resolved.task.state == "closed"
    assert ado.items[1]["fields"]["System.State"] == "Done" and "Resolved" in ado.items[1]["comments"][-1]
    assert tasks.get_task("boards", key) == resolved.task

    # The finding comes back (occurrence 2): its work item is reopened, not a second one opened.
    again = send(sender, delivery("boards", make_transition("sftp-enabled", "opened", occurrence=2)), tasks)
    assert again.task is not None and (again.task.external_id, again.task.state) == ("1", "open")
    assert list(ado.items) == [1] and ado.items[1]["fields"]["System.State"] == "To Do"
    assert "occurrence 2" in ado.items[1]["comments"][-1]
    assert ado.failures == []


def test_a_recurring_finding_reopens_its_work_item_in_the_types_first_proposed_state(ado: FakeAzureDevOps) -> None:
    sender, tasks = boards(ado), MemoryTasks()
    for occurrence in (1, 2, 3):
        send(sender, delivery("boards", make_transition("sftp-enabled", "opened", occurrence=occurrence)), tasks)
        assert ado.items[1]["fields"]["System.State"] == "To Do"
        send(sender, delivery("boards", make_transition("sftp-enabled", "resolved", occurrence=occurrence)), tasks)
        assert ado.items[1]["fields"]["System.State"] == "Done"
    assert list(ado.items) == [1]
    comments = ado.items[1]["comments"]
    assert [c.split("</b>")[0].rsplit(">", 1)[-1] for c in comments] == [
        "Resolved",
        "Reopened",
        "Resolved",
        "Reopened",
        "Resolved",
    ]
    assert "occurrence 2" in comments[1] and "occurrence 3" in comments[3]
    # The reopen state is read once from the Work Item Type States API, then remembered.
    states_calls = [r for r in ado.received if r.route.endswith("/workitemtypes/User%20Story/states")]
    assert len(states_calls) == 1 and states_calls[0].query == {"api-version": "7.1"}
    patches = [r.json() for r in ado.received if r.method == "PATCH"]
    assert patches[1] == [{"op": "add", "path": "/fields/System.State", "value": "To Do"}]
    assert {r.headers["content-type"] for r in ado.received if r.method == "PATCH"} == {"application/json-patch+json"}
    assert ado.failures == []


def test_reopen_in_an_agile_process_and_with_a_configured_state(ado: FakeAzureDevOps) -> None:
    agile = (("New", "Proposed"), ("Active", "InProgress"), ("Resolved", "Resolved"), ("Closed", "Completed"))
    ado.states_by_type = {"Task": (*agile, ("Removed", "Removed"))}
    sender, tasks = boards(ado, work_item_type="Task", done_state="Closed"), MemoryTasks()
    send(sender, delivery("boards", make_transition("static-website")), tasks)
    assert ado.items[1]["fields"]["System.State"] == "New"
    send(sender, delivery("boards", make_transition("static-website", "resolved")), tasks)
    send(sender, delivery("boards", make_transition("static-website", occurrence=2)), tasks)
    assert ado.items[1]["fields"]["System.State"] == "New"

    configured, tasks = boards(ado, work_item_type="Task", done_state="Closed", reopen_state="Active"), MemoryTasks()
    send(configured, delivery("boards", make_transition("sftp-enabled")), tasks)
    send(configured, delivery("boards", make_transition("sftp-enabled", "resolved")), tasks)
    send(configured, delivery("boards", make_transition("sftp-enabled", occurrence=2)), tasks)
    assert ado.items[2]["fields"]["System.State"] == "Active" and len(ado.items) == 2
    assert sum(r.route.endswith("/states") for r in ado.received) == 1  # only the unconfigured sender asked


def test_a_work_item_that_cannot_be_reopened_gives_way_to_a_new_one(ado: FakeAzureDevOps) -> None:
    sender, tasks = boards(ado), MemoryTasks()
    send(sender, delivery("boards", make_transition("sftp-enabled")), tasks)
    send(sender, delivery("boards", make_transition("sftp-enabled", "resolved")), tasks)
    ado.frozen_states = {"Done"}  # a process rule forbids moving a Done item back (HTTP 400, TF401320)
    again = send(sender, delivery("boards", make_transition("sftp-enabled", occurrence=2)), tasks)
    assert again.task is not None and again.task.external_id == "2" and ado.items[1]["fields"]["System.State"] == "Done"
    send(sender, delivery("boards", make_transition("sftp-enabled", "resolved", occurrence=2)), tasks)
    ado.frozen_states = set()
    ado.deleted.add(2)  # deleted by someone: the next occurrence opens a new item
    third = send(sender, delivery("boards", make_transition("sftp-enabled", occurrence=3)), tasks)
    assert third.task is not None and third.task.external_id == "3" and len(ado.items) == 3


def test_a_lost_ref_finds_the_closed_work_item_by_its_tag_and_reopens_it(ado: FakeAzureDevOps) -> None:
    sender, tasks = boards(ado), MemoryTasks()
    send(sender, delivery("boards", make_transition("sftp-enabled")), tasks)
    send(sender, delivery("boards", make_transition("sftp-enabled", "resolved")), tasks)
    tasks.forget()
    ado.received.clear()
    again = send(sender, delivery("boards", make_transition("sftp-enabled", occurrence=2)), tasks)
    assert again.task is not None and (again.task.external_id, again.task.state) == ("1", "open")
    assert ado.items[1]["fields"]["System.State"] == "To Do" and len(ado.items) == 1
    listed = [r for r in ado.received if r.method == "GET" and r.route.endswith("/_apis/wit/workitems")]
    assert listed[0].query == {
        "ids": "1",
        "fields": "System.Id,System.State",
        "errorPolicy": "Omit",
        "api-version": "7.1",
    }


def test_a_retryable_failure_to_read_the_states_changes_nothing(ado: FakeAzureDevOps) -> None:
    sender, tasks = boards(ado), MemoryTasks()
    send(sender, delivery("boards", make_transition("sftp-enabled")), tasks)
    send(sender, delivery("boards", make_transition("sftp-enabled", "resolved")), tasks)
    for _ in range(4):
        ado.script.then(503)
    outcome = send(sender, delivery("boards", make_transition("sftp-enabled", occurrence=2)), tasks)
    assert not outcome.ok and outcome.retryable and outcome.task is None
    assert ado.items[1]["fields"]["System.State"] == "Done" and len(ado.items) == 1
    assert send(sender, delivery("boards", make_transition("sftp-enabled", occurrence=2)), tasks).ok
    assert ado.items[1]["fields"]["System.State"] == "To Do"


@pytest.mark.parametrize("tracker", ["ado", "gh"])
def test_an_older_occurrence_delivered_late_never_closes_or_reopens_the_task(tracker: str, request: Any) -> None:
    """Out of order (a retried "resolved" #1 after "opened" #2): the task follows the newest occurrence."""
    server = request.getfixturevalue(tracker)
    sender = boards(server) if tracker == "ado" else issues(server)
    name, tasks = sender.name, MemoryTasks()

    def state() -> str:
        if tracker == "ado":
            return "closed" if server.items[1]["fields"]["System.State"] == "Done" else "open"
        return str(server.issues[1]["state"])

    def deliver(kind: str, occurrence: int) -> Outcome:
        return send(sender, delivery(name, make_transition("sftp-enabled", kind, occurrence=occurrence)), tasks)

    deliver("opened", 1)
    assert deliver("opened", 2).ok and state() == "open"  # resolved #1 is still being retried
    assert tasks.get_task(name, make_transition()["key"]).occurrence == 2  # type: ignore[union-attr]
    hits = server.hits
    assert deliver("resolved", 1) == Outcome(ok=True) and state() == "open" and server.hits == hits
    deliver("resolved", 2)
    assert state() == "closed"
    hits = server.hits
    assert deliver("opened", 2) == Outcome(ok=True) and state() == "closed"  # a late re-send of #2
    assert deliver("changed", 1) == Outcome(ok=True) and server.hits == hits
    assert deliver("opened", 3).task.state == "open" and state() == "open"  # type: ignore[union-attr]
    assert len(server.items if tracker == "ado" else server.issues) == 1


def test_azure_devops_checks_the_pat(ado: FakeAzureDevOps) -> None:
    outcome = send(boards(ado, token="wrong-token-0123456789"), delivery("boards", make_transition()), MemoryTasks())
    assert outcome.status == 401 and not outcome.retryable and not outcome.ok
    assert ado.items == {} and ado.hits == 1  # the lookup failed: nothing was created blind
    header = ado.received[0].headers["authorization"]
    assert header == "Basic " + base64.b64encode(b":wrong-token-0123456789").decode()


def test_a_type_without_severity_falls_back_once_and_remembers(ado: FakeAzureDevOps) -> None:
    ado.fields_by_type = {"Task": {"Microsoft.VSTS.Common.Priority"}}
    sender, tasks = boards(ado, work_item_type="Task"), MemoryTasks()
    assert send(sender, delivery("boards", make_transition("sftp-enabled")), tasks).ok
    assert send(sender, delivery("boards", make_transition("static-website")), tasks).ok
    assert len(ado.items) == 2
    assert all("Microsoft.VSTS.Common.Severity" not in i["fields"] for i in ado.items.values())
    assert routes(ado).count("POST workitems/$Task") == 3  # 400 TF51535, retry without; then one POST


def test_changed_opens_a_task_only_for_a_finding_that_rose_to_the_floor(ado: FakeAzureDevOps) -> None:
    from shared.core.model import Severity

    sender, tasks = boards(ado, min_severity=Severity.HIGH), MemoryTasks()
    below = make_transition("files-smb-share", "changed", severity="medium")
    assert send(sender, delivery("boards", below), tasks) == Outcome(ok=True)
    perimeter = make_transition("perimeter-access-mode-changed", "changed")
    assert send(sender, delivery("boards", perimeter), tasks) == Outcome(ok=True)
    assert ado.items == {}
    risen = send(sender, delivery("boards", make_transition("sftp-enabled", "changed")), tasks)
    assert risen.task is not None and list(ado.items) == [1]


def test_resolved_without_a_task_makes_no_call_and_a_deleted_item_counts_as_closed(ado: FakeAzureDevOps) -> None:
    sender, tasks = boards(ado), MemoryTasks()
    assert send(sender, delivery("boards", make_transition("sftp-enabled", "resolved")), tasks) == Outcome(ok=True)
    assert ado.hits == 0
    send(sender, delivery("boards", make_transition("sftp-enabled")), tasks)
    ado.deleted.add(1)
    resolved = send(sender, delivery("boards", make_transition("sftp-enabled", "resolved")), tasks)
    assert resolved.ok and resolved.task is not None and resolved.task.state == "closed"


def test_a_sign_in_page_instead_of_a_work_item_is_a_failure(ado: FakeAzureDevOps) -> None:
    ado.script.then(200, body=b'{"workItems": []}').then(203, {"Content-Type": "text/html"}, b"<html>Sign in</html>")
    outcome = send(boards(ado), delivery("boards", make_transition()), MemoryTasks())
    assert not outcome.ok and outcome.status == 203 and outcome.task is None


def test_azure_devops_through_the_dispatcher(ado: FakeAzureDevOps, tmp_path: Path) -> None:
    from shared.adapters.state.sqlite_store import SqliteStateStore

    store = SqliteStateStore(str(tmp_path / "tasks.sqlite"))
    dispatcher = Dispatcher(store, {"boards": boards(ado)}, {})
    opened = make_transition("static-website")
    store.add_deliveries([delivery("boards", opened), delivery("boards", opened, idempotency_key="replayed")])
    assert dispatcher.dispatch_due().sent == 2
    store.add_deliveries([delivery("boards", make_transition("static-website", "resolved"))])
    assert dispatcher.dispatch_due().sent == 1
    task = store.get_task("boards", opened["key"])
    assert len(ado.items) == 1 and task is not None and task.state == "closed"


# -- GitHub ----------------------------------------------------------------------------------------------


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub(GH_TOKEN, repository="contoso/platform-security") as server:
        yield server  # type: ignore[misc]


def issues(server: FakeGitHub, token: str = GH_TOKEN) -> GitHubIssuesSender:
    return GitHubIssuesSender(
        "issues",
        "contoso/platform-security",
        token,
        labels=("security",),
        assignees=("octocat",),
        api_url=server.url,
        retry=policy(),
    )


def test_github_issue_life_cycle(gh: FakeGitHub) -> None:
    sender, tasks = issues(gh), MemoryTasks()
    opened = make_transition("static-website", "opened")
    label = finding_label(opened["key"])

    outcome = send(sender, delivery("issues", opened), tasks)
    assert outcome.task is not None and outcome.task.external_id == "1" and outcome.task.url.endswith("/issues/1")
    issue = gh.issues[1]
    assert issue["labels"] == ["nsp-drift", label, "security"] and issue["assignees"] == ["octocat"]
    assert issue["title"].startswith("[nsp-drift] Static website") and "### How to fix" in issue["body"]
    assert gh.received[0].query == {"labels": label, "state": "all", "per_page": "10"}
    for request in gh.received:
        assert request.headers["authorization"] == f"Bearer {GH_TOKEN}"
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"

    send(sender, delivery("issues", opened, idempotency_key="again"), tasks)
    tasks.forget()
    recovered = send(sender, delivery("issues", opened, idempotency_key="again-2"), tasks)
    assert recovered.task is not None and recovered.task.external_id == "1"
    assert list(gh.issues) == [1] and len(issue["comments"]) == 2

    assert send(sender, delivery("issues", make_transition("static-website", "changed")), tasks).ok
    assert "severity: `low` → `high`" in issue["comments"][-1]

    closed = send(sender, delivery("issues", make_transition("static-website", "resolved")), tasks)
    assert closed.task is not None and closed.task.state == "closed"
    assert issue["state"] == "closed" and issue["state_reason"] == "completed"
    assert issue["comments"][-1].startswith("**Resolved**") and len(issue["comments"]) == 4
    assert gh.failures == []


def test_a_recurring_finding_reopens_its_issue(gh: FakeGitHub) -> None:
    sender, tasks = issues(gh), MemoryTasks()
    send(sender, delivery("issues", make_transition("static-website")), tasks)
    send(sender, delivery("issues", make_transition("static-website", "resolved")), tasks)
    reopened = send(sender, delivery("issues", make_transition("static-website", occurrence=2)), tasks)
    assert reopened.task is not None and (reopened.task.external_id, reopened.task.state) == ("1", "open")
    issue = gh.issues[1]
    assert list(gh.issues) == [1] and issue["state"] == "open" and issue["state_reason"] == "reopened"
    assert issue["comments"][-1].startswith("**Reopened**: the finding is open again (occurrence 2).")
    patch = [r.json() for r in gh.received if r.method == "PATCH"][-1]
    assert patch == {"state": "open", "state_reason": "reopened"}
    # Resolved again, then the ref is lost: the label (state=all) finds the closed issue to reopen.
    send(sender, delivery("issues", make_transition("static-website", "resolved", occurrence=2)), tasks)
    tasks.forget()
    third = send(sender, delivery("issues", make_transition("static-website", occurrence=3)), tasks)
    assert third.task is not None and third.task.external_id == "1" and issue["state"] == "open"
    assert "occurrence 3" in issue["comments"][-1] and list(gh.issues) == [1]
    # Deleted while closed: the next occurrence opens a new issue.
    send(sender, delivery("issues", make_transition("static-website", "resolved", occurrence=3)), tasks)
    del gh.issues[1]
    fourth = send(sender, delivery("issues", make_transition("static-website", occurrence=4)), tasks)
    assert fourth.task is not None and fourth.task.external_id == "2" and gh.issues[2]["state"] == "open"
    assert gh.failures == []


def test_github_checks_the_token(gh: FakeGitHub) -> None:
    outcome = send(
        issues(gh, token="ghp_wrongwrongwrongwrongwrongwrongwrong00"),
        delivery("issues", make_transition()),
        MemoryTasks(),
    )
    assert outcome.status == 401 and not outcome.retryable and gh.issues == {}


def test_github_rate_limits_are_retryable_later_not_now(gh: FakeGitHub) -> None:
    reset = str(int(time.time()) + 90)
    gh.script.then(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}, b'{"message": "API rate limit"}')
    outcome = send(issues(gh), delivery("issues", make_transition()), MemoryTasks())
    assert gh.hits == 1 and outcome.retryable and outcome.retry_after is not None and 80 <= outcome.retry_after <= 91
    gh.script.then(403, {"retry-after": "60"}, b'{"message": "secondary rate limit"}')
    assert send(issues(gh), delivery("issues", make_transition()), MemoryTasks()).retry_after == 60.0
    gh.script.then(403, body=b'{"message": "Resource not accessible by integration"}')
    forbidden = send(issues(gh), delivery("issues", make_transition()), MemoryTasks())
    assert forbidden.status == 403 and not forbidden.retryable


def test_github_deleted_issue_counts_as_closed_and_a_changed_one_is_reopened_as_new(gh: FakeGitHub) -> None:
    sender, tasks = issues(gh), MemoryTasks()
    send(sender, delivery("issues", make_transition("static-website")), tasks)
    del gh.issues[1]
    changed = send(sender, delivery("issues", make_transition("static-website", "changed")), tasks)
    assert changed.task is not None and changed.task.external_id == "2"  # the stale ref was replaced
    del gh.issues[2]
    closed = send(sender, delivery("issues", make_transition("static-website", "resolved")), tasks)
    assert closed.ok and closed.task is not None and closed.task.state == "closed"


def test_the_json_each_sender_posts_is_compact_utf8(sink: FakeServer) -> None:
    http.post_json(f"{sink.url}/x", {"text": "Enforced → Learning"}, retry=policy())
    (request,) = sink.received
    assert request.body == '{"text":"Enforced → Learning"}'.encode()
    assert json.loads(request.body) == {"text": "Enforced → Learning"}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("nsp-drift/")


# -- tasks of per-subject findings stored before findings were one per rule and account ------------------


def test_a_merged_finding_takes_over_the_open_issue_of_its_subjects_and_closes_the_others(gh: FakeGitHub) -> None:
    sender, tasks = issues(gh), MemoryTasks()
    new_key = f"unmanaged-disk|{ACCOUNT.lower()}|"
    legacy = [new_key + subject for subject in ("vm1/d0", "vm1/d1", "vm1/os")]
    for key in legacy:  # what the previous version opened: one issue per VHD
        assert send(sender, delivery("issues", make_transition("unmanaged-disk", "opened", key=key)), tasks).ok
    assert [i["state"] for i in gh.issues.values()] == ["open", "open", "open"]
    tasks.forget()  # the refs too may be lost: the issues are found again by their labels

    merged = make_transition("unmanaged-disk", "changed", key=new_key, legacy_keys=tuple(legacy))
    assert merged["legacy_keys"] == legacy
    outcome = send(sender, delivery("issues", merged), tasks)
    assert outcome.ok and outcome.task is not None
    assert (outcome.task.finding_key, outcome.task.external_id, outcome.task.state) == (new_key, "1", "open")
    assert [i["state"] for i in gh.issues.values()] == ["open", "closed", "closed"]
    assert gh.issues[2]["comments"][-1].startswith("**Resolved**") and "Merged" in gh.issues[2]["comments"][-1]
    assert len(gh.issues) == 3  # no new issue

    # From now on the finding's own ref is used: its resolution closes the taken-over issue.
    resolved = make_transition("unmanaged-disk", "resolved", key=new_key, legacy_keys=tuple(legacy))
    closed = send(sender, delivery("issues", resolved), tasks)
    assert closed.task is not None and closed.task.state == "closed" and gh.issues[1]["state"] == "closed"
    assert len(gh.issues) == 3 and gh.failures == []


def test_a_merged_finding_takes_over_a_work_item_of_its_subjects(ado: FakeAzureDevOps) -> None:
    sender, tasks = boards(ado), MemoryTasks()
    new_key = f"files-smb-share|{ACCOUNT.lower()}|"
    legacy = [new_key + "share-a", new_key + "share-b"]
    for key in legacy:
        assert send(sender, delivery("boards", make_transition("files-smb-share", "opened", "high", key=key)), tasks).ok
    resolved = make_transition("files-smb-share", "resolved", key=new_key, legacy_keys=tuple(legacy))
    outcome = send(sender, delivery("boards", resolved), tasks)
    assert outcome.ok and outcome.task is not None and outcome.task.finding_key == new_key
    assert len(ado.items) == 2 and all(i["fields"]["System.State"] == "Done" for i in ado.items.values())
