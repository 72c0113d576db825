"""Remediation tasks, one per open finding: Azure DevOps work items and GitHub issues.

``opened`` creates the task unless one is already open for the finding (the stored TaskRef, so a
re-delivery never opens a second); ``changed`` comments on it; ``resolved`` comments and closes.
Perimeter rule changes (no finding of their own) get a task per change key like any other.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping
from typing import Any

from shared.notify import http
from shared.notify.base import Delivery, Outcome, TaskLookup, TaskRef
from shared.notify.explain import why_and_how
from shared.output import portal_url

_ADO_SEVERITY = {
    "critical": "1 - Critical",
    "high": "2 - High",
    "medium": "3 - Medium",
    "low": "4 - Low",
    "info": "4 - Low",
}


def finding_tag(finding_key: str) -> str:
    """A short, stable marker of the finding on the task (find a task again if its ref is lost)."""
    return "nsp-drift-" + hashlib.sha256(finding_key.encode()).hexdigest()[:12]


def _title(t: Mapping[str, Any]) -> str:
    name = str(t.get("resource", "")).rstrip("/").rsplit("/", 1)[-1]
    return f"[nsp-drift] {t.get('title', t.get('rule'))}: {name}"[:250]


def _text(t: Mapping[str, Any]) -> str:
    why, how = why_and_how(str(t.get("rule", "")))
    lines = [
        str(t.get("summary", "")),
        "",
        f"Resource: {t.get('resource')}",
        f"Perimeter: {t.get('perimeter') or '-'}",
        f"Rule: {t.get('rule')} (severity {t.get('severity')})",
        f"Changed by: {t.get('changed_by')} at {t.get('when') or '-'}",
        f"Events: {', '.join(t.get('event_ids', [])) or '-'}",
        f"Portal: {portal_url(str(t.get('resource', '')))}",
    ]
    if why:
        lines += ["", f"Why it matters: {why}"]
    if how:
        lines += ["", f"How to fix: {how}"]
    lines += ["", f"Finding key: {t.get('key')} ({finding_tag(str(t.get('key')))})"]
    return "\n".join(lines)


def _outcome(result: http.HttpResult, task: TaskRef | None = None) -> Outcome:
    return Outcome(
        ok=result.ok,
        status=result.status,
        retryable=result.retryable,
        error=result.error,
        retry_after=result.retry_after,
        task=task if result.ok else None,
    )


class AzureDevOpsSender:
    """Azure Boards work items (REST 7.1, JSON Patch), authenticated with a PAT."""

    def __init__(
        self,
        name: str,
        organization: str,
        project: str,
        token: str,
        *,
        work_item_type: str = "Task",
        area_path: str = "",
        assigned_to: str = "",
        tags: tuple[str, ...] = (),
        done_state: str = "Done",
        base_url: str = "https://dev.azure.com",
        retry: http.RetrySettings | None = None,
    ) -> None:
        self.name = name
        self._base = f"{base_url.rstrip('/')}/{organization}/{project}/_apis/wit"
        self._token = token
        self._type = work_item_type
        self._area, self._assignee, self._tags, self._done = area_path, assigned_to, tags, done_state
        self._retry = retry

    def _headers(self) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f":{self._token}".encode()).decode()}

    def _call(self, method: str, url: str, body: Any, content_type: str = "application/json") -> http.HttpResult:
        return http.request(
            method, url, body, self._headers(), content_type=content_type, retry=self._retry, secrets=(self._token,)
        )

    def _comment(self, work_item: str, text: str) -> http.HttpResult:
        url = f"{self._base}/workItems/{work_item}/comments?api-version=7.1-preview.4"
        return self._call("POST", url, {"text": html.escape(text).replace("\n", "<br/>")})

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome:
        t, kind = delivery.transition, str(delivery.transition.get("transition"))
        existing = tasks.get_task(self.name, delivery.finding_key)
        if kind == "opened" and (existing is None or existing.state != "open"):
            ops = [
                {"op": "add", "path": "/fields/System.Title", "value": _title(t)},
                {
                    "op": "add",
                    "path": "/fields/System.Description",
                    "value": html.escape(_text(t)).replace("\n", "<br/>"),
                },
                {
                    "op": "add",
                    "path": "/fields/System.Tags",
                    "value": "; ".join(["nsp-drift", finding_tag(delivery.finding_key), *self._tags]),
                },
                {
                    "op": "add",
                    "path": "/fields/Microsoft.VSTS.Common.Severity",
                    "value": _ADO_SEVERITY.get(str(t.get("severity")), "3 - Medium"),
                },
            ]
            if self._area:
                ops.append({"op": "add", "path": "/fields/System.AreaPath", "value": self._area})
            if self._assignee:
                ops.append({"op": "add", "path": "/fields/System.AssignedTo", "value": self._assignee})
            url = f"{self._base}/workitems/${self._type}?api-version=7.1"
            result = self._call("POST", url, ops, "application/json-patch+json")
            task = None
            if result.ok:
                item = result.json()
                link = item.get("_links", {}).get("html", {}).get("href", "") if isinstance(item, dict) else ""
                task = TaskRef(self.name, delivery.finding_key, str(item.get("id")), link, "open")
            return _outcome(result, task)
        if existing is None:
            return Outcome(ok=True, status=None)  # nothing to update: no task was ever opened here
        comment = self._comment(existing.external_id, f"{kind}: {t.get('summary')} (by {t.get('changed_by')})")
        if not comment.ok or kind != "resolved":
            return _outcome(comment, existing)
        url = f"{self._base}/workitems/{existing.external_id}?api-version=7.1"
        closed = self._call(
            "PATCH",
            url,
            [{"op": "add", "path": "/fields/System.State", "value": self._done}],
            "application/json-patch+json",
        )
        return _outcome(closed, TaskRef(self.name, existing.finding_key, existing.external_id, existing.url, "closed"))


class GitHubIssuesSender:
    """GitHub issues in one repository, authenticated with a token (fine-grained PAT or app token)."""

    def __init__(
        self,
        name: str,
        repository: str,
        token: str,
        *,
        labels: tuple[str, ...] = (),
        assignees: tuple[str, ...] = (),
        api_url: str = "https://api.github.com",
        retry: http.RetrySettings | None = None,
    ) -> None:
        self.name = name
        self._repo = f"{api_url.rstrip('/')}/repos/{repository}"
        self._token = token
        self._labels, self._assignees = labels, assignees
        self._retry = retry

    def _call(self, method: str, url: str, body: Any) -> http.HttpResult:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        return http.request(method, url, body, headers, retry=self._retry, secrets=(self._token,))

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome:
        t, kind = delivery.transition, str(delivery.transition.get("transition"))
        existing = tasks.get_task(self.name, delivery.finding_key)
        if kind == "opened" and (existing is None or existing.state != "open"):
            body = {
                "title": _title(t),
                "body": _text(t),
                "labels": ["nsp-drift", finding_tag(delivery.finding_key), *self._labels],
                "assignees": list(self._assignees),
            }
            result = self._call("POST", f"{self._repo}/issues", body)
            task = None
            if result.ok:
                issue = result.json()
                task = TaskRef(
                    self.name, delivery.finding_key, str(issue.get("number")), str(issue.get("html_url", "")), "open"
                )
            return _outcome(result, task)
        if existing is None:
            return Outcome(ok=True, status=None)
        comment = self._call(
            "POST",
            f"{self._repo}/issues/{existing.external_id}/comments",
            {"body": f"**{kind}**: {t.get('summary')} (by {t.get('changed_by')})"},
        )
        if not comment.ok or kind != "resolved":
            return _outcome(comment, existing)
        closed = self._call(
            "PATCH", f"{self._repo}/issues/{existing.external_id}", {"state": "closed", "state_reason": "completed"}
        )
        return _outcome(closed, TaskRef(self.name, existing.finding_key, existing.external_id, existing.url, "closed"))
