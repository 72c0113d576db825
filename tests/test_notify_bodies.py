"""Every body and card stays within what its receiver accepts, and says what it left out
(issue 11, defect 9): GitHub issue bodies and comments (65,536 characters), Azure DevOps work item
descriptions (long-text field: 1 M characters) and comments, Teams cards (< 16 KB), and webhook
CloudEvents (1,000,000 bytes: forwardable to Event Grid, whose events are at most 1 MB).

A finding's provenance lists every event id that led to it; a storm of portal writes or a long
coalescing window gives thousands (1,800 made a 69,261-character GitHub issue body on 02faea9).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared.adapters.notify import http
from shared.adapters.notify.devops import AzureDevOpsSender, comment_html, description_html
from shared.adapters.notify.github import GitHubIssuesSender, comment_body, issue_body
from shared.adapters.notify.teams import MAX_CARD_BYTES, build_card, build_digest_card, card_bytes
from shared.adapters.notify.webhook import WebhookSender, build_digest_event, build_event
from shared.core.changes import Provenance
from shared.core.notify import limits
from tests.fakes import FakeAzureDevOps, FakeGitHub, FakeServer
from tests.fakes.transitions import MemoryTasks, delivery, make_transition

ADO_TOKEN = "adopat0123456789abcdefghijklmnopqrstuvwxyz0123456789"
GH_TOKEN = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = http.RetrySettings(attempts=2, max_total_seconds=5, initial=0.01, max_wait=0.02)
STORM = 1_800


def event_ids(count: int) -> tuple[str, ...]:
    """Event Grid event ids are GUIDs."""
    return tuple(str(uuid.UUID(int=n + 1)) for n in range(count))


def stormy(kind: str = "opened", count: int = STORM, **override: Any) -> dict[str, Any]:
    provenance = Provenance(event_ids=event_ids(count), operation_names=("Microsoft.Storage/storageAccounts/write",))
    return make_transition("sftp-enabled", kind, provenance=provenance, **override)


def big_rules(count: int) -> list[dict[str, Any]]:
    return [
        {"name": f"allow-partner-{n:04d}", "direction": "Inbound", "addressPrefixes": [f"10.{n // 256}.{n % 256}.0/24"]}
        for n in range(count)
    ]


# -- GitHub -----------------------------------------------------------------------------------------------


def test_a_github_issue_for_1800_events_fits_and_counts_what_it_left_out() -> None:
    """On 02faea9: the body was 69,261 characters (GitHub refuses over 65,536) -> now within the cap."""
    transition = stormy()
    body = issue_body(transition, "nsp-drift-abc")
    assert len(body) <= limits.GITHUB_MAX_BODY, f"issue body of {len(body)} characters"
    shown = limits.MAX_LISTED_EVENT_IDS
    assert f"... and {STORM - shown} more event ids" in body
    assert transition["event_ids"][0] in body and transition["event_ids"][shown - 1] in body
    assert transition["event_ids"][shown] not in body

    with FakeGitHub(GH_TOKEN) as github:
        sender = GitHubIssuesSender("issues", "contoso/sec", GH_TOKEN, api_url=github.url, retry=FAST)
        outcome = sender.send(delivery("issues", transition), MemoryTasks())
    assert outcome.ok, outcome.error
    (issue,) = github.issues.values()
    assert len(issue["body"]) <= limits.GITHUB_MAX_BODY


def test_a_github_comment_for_1800_events_and_a_huge_change_fits() -> None:
    changed = stormy("changed", after={"severity": "high", "rules": big_rules(3000)}, before={"severity": "low"})
    text = comment_body(changed)
    assert len(text) <= limits.GITHUB_MAX_BODY
    assert f"... and {STORM - limits.MAX_LISTED_EVENT_IDS} more event ids" in text
    with FakeGitHub(GH_TOKEN) as github:
        tasks = MemoryTasks()
        sender = GitHubIssuesSender("issues", "contoso/sec", GH_TOKEN, api_url=github.url, retry=FAST)
        opened = sender.send(delivery("issues", stormy()), tasks)
        assert opened.ok and opened.task is not None
        tasks.put_task(opened.task)
        outcome = sender.send(delivery("issues", changed, idempotency_key="c1"), tasks)
    assert outcome.ok, outcome.error
    comments = [c for issue in github.issues.values() for c in issue["comments"]]
    assert comments and all(len(c) <= limits.GITHUB_MAX_BODY for c in comments)


def test_a_huge_summary_is_cut_with_a_count_of_what_was_left_out() -> None:
    transition = stormy(summary="S" * 200_000)
    body = issue_body(transition, "nsp-drift-abc")
    assert len(body) <= limits.GITHUB_MAX_BODY
    assert "more characters left out" in body
    assert "Finding key" in body  # the trailer that finds the task again is kept


# -- Azure DevOps -------------------------------------------------------------------------------------------


def test_a_work_item_for_1800_events_lists_a_bounded_number_and_counts_the_rest() -> None:
    """On 02faea9: all 1,800 event ids were listed (a 69 KB description) -> 50 and a count."""
    transition = stormy()
    html = description_html(transition, "nsp-drift-abc")
    assert f"... and {STORM - limits.MAX_LISTED_EVENT_IDS} more event ids" in html
    assert transition["event_ids"][limits.MAX_LISTED_EVENT_IDS] not in html
    assert len(html) < 20_000
    comment = comment_html(stormy("changed", after={"severity": "high", "rules": big_rules(3000)}))
    assert f"... and {STORM - limits.MAX_LISTED_EVENT_IDS} more event ids" in comment
    assert len(comment) <= limits.DEVOPS_MAX_COMMENT

    with FakeAzureDevOps(ADO_TOKEN) as ado:
        sender = AzureDevOpsSender("boards", "contoso", "Platform", ADO_TOKEN, base_url=ado.url, retry=FAST)
        outcome = sender.send(delivery("boards", transition), MemoryTasks())
        assert outcome.ok, outcome.error
        assert outcome.task is not None
        sender.comment(outcome.task, comment_html(stormy("changed")))
    (item,) = ado.items.values()
    assert len(item["fields"]["System.Description"]) <= limits.DEVOPS_MAX_TEXT
    assert all(len(c) <= limits.DEVOPS_MAX_COMMENT for c in item["comments"])


def test_work_item_texts_are_capped_even_when_one_value_is_enormous() -> None:
    html = description_html(stormy(summary="S" * 1_200_000), "nsp-drift-abc")
    assert len(html) <= limits.DEVOPS_MAX_TEXT and "more characters left out" in html
    assert html.endswith("</p>")  # the cut never leaves half a tag behind
    comment = comment_html(stormy("changed", summary="S" * 200_000))
    assert len(comment) <= limits.DEVOPS_MAX_COMMENT and "more characters left out" in comment


# -- Teams ----------------------------------------------------------------------------------------------------


def test_teams_cards_bound_the_event_ids_too() -> None:
    message = build_card(stormy())
    assert card_bytes(message) < MAX_CARD_BYTES
    assert f"(+{STORM - 3} more)" in json.dumps(message)
    digest = build_digest_card([stormy(resource_id=f"/subscriptions/s/x/st{n}") for n in range(300)], "secops")
    assert card_bytes(digest) < MAX_CARD_BYTES


# -- webhook ------------------------------------------------------------------------------------------------------


def test_a_webhook_event_bounds_its_event_ids_and_says_how_many_it_left_out() -> None:
    transition = stormy()
    event = build_event(transition, "idem-1", 0.0)
    data = event["data"]
    assert len(data["event_ids"]) == limits.MAX_EVENT_IDS_IN_EVENT
    assert data["event_ids_omitted"] == STORM - limits.MAX_EVENT_IDS_IN_EVENT
    assert data["event_ids"] == list(transition["event_ids"][: limits.MAX_EVENT_IDS_IN_EVENT])
    small = build_event(make_transition(), "idem-2", 0.0)["data"]
    assert "event_ids_omitted" not in small and "truncated" not in small


def test_a_webhook_event_with_an_enormous_change_stays_under_the_cap() -> None:
    transition = stormy("changed", after={"severity": "high", "rules": big_rules(40_000)}, before={"rules": []})
    assert len(json.dumps(transition)) > 2 * limits.WEBHOOK_MAX_BYTES
    event = build_event(transition, "idem-1", 0.0)
    assert len(http.encode_json(event)) <= limits.WEBHOOK_MAX_BYTES
    data = event["data"]
    assert data["truncated"] is True
    assert data["key"] == transition["key"] and data["idempotency_key"] == transition["idempotency_key"]
    assert "more items left out" in json.dumps(data["after"]["rules"][-1])

    with FakeServer() as sink:
        sender = WebhookSender("siem", f"{sink.url}/hook", SECRET, retry=FAST, clock=lambda: 0.0)
        assert sender.send(delivery("siem", transition), MemoryTasks()).ok
    (request,) = sink.received
    assert len(request.body) <= limits.WEBHOOK_MAX_BYTES


@pytest.mark.parametrize("count", [1, 100])
def test_a_webhook_digest_keeps_every_transition_and_stays_under_the_cap(count: int) -> None:
    transitions = [
        {**stormy(after={"severity": "low", "rules": big_rules(2000)}), "idempotency_key": f"k{n}"}
        for n in range(count)
    ]
    event = build_digest_event("siem", transitions, 0.0)
    assert len(http.encode_json(event)) <= limits.WEBHOOK_MAX_BYTES
    assert event["data"]["count"] == count == len(event["data"]["transitions"])
    assert [t["idempotency_key"] for t in event["data"]["transitions"]] == [f"k{n}" for n in range(count)]


def test_a_reopen_comment_with_its_note_stays_within_the_cap() -> None:
    """The reopen path prepends a note to the comment: the cap is applied to what is posted."""
    with FakeGitHub(GH_TOKEN) as github, FakeAzureDevOps(ADO_TOKEN) as ado:
        gh = GitHubIssuesSender("issues", "contoso/sec", GH_TOKEN, api_url=github.url, retry=FAST)
        boards = AzureDevOpsSender("boards", "contoso", "Platform", ADO_TOKEN, base_url=ado.url, retry=FAST)
        for sender in (gh, boards):
            opened = sender.send(delivery(sender.name, stormy()), MemoryTasks())
            assert opened.ok and opened.task is not None
            text = "x" * (limits.GITHUB_MAX_BODY - 10)
            note = "<p><b>Reopened</b>: the finding is open again.</p>" if sender is boards else "**Reopened**\n\n"
            assert sender.comment(opened.task, note + text).ok
    (issue,) = github.issues.values()
    (item,) = ado.items.values()
    assert [len(c) <= limits.GITHUB_MAX_BODY for c in issue["comments"]] == [True]
    assert [len(c) <= limits.DEVOPS_MAX_COMMENT for c in item["comments"]] == [True]
    assert "more characters left out" in issue["comments"][0] and "more characters left out" in item["comments"][0]
