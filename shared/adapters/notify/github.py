"""GitHub issues: one issue per open finding (REST, API version 2022-11-28, token as Bearer).

The life cycle of ``shared.adapters.notify.tasks.TaskSender``: ``opened`` creates the issue unless one is open for the
finding (the stored TaskRef, or, when it was lost, the open issue carrying the finding's label);
``changed`` comments; ``resolved`` closes as completed and comments. A finding that comes back
(its next occurrence) reopens its closed issue (``state: open``, ``state_reason: reopened``) with a
comment naming the occurrence; a new issue is opened only if the old one is gone.

GitHub signals rate limits with 403 as well as 429: a 403 with ``x-ratelimit-remaining: 0`` or a
``retry-after`` header is reported as retryable with the wait it asks for, so the outbox tries
again later rather than dropping the task.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from shared.adapters.notify import http
from shared.adapters.notify.tasks import TaskSender, finding_marker
from shared.core.model import Severity
from shared.core.notify import limits
from shared.core.notify.base import Outcome, TaskRef, occurrence_of
from shared.core.notify.explain import why_and_how
from shared.core.output import portal_url

API_VERSION = "2022-11-28"
MEDIA_TYPE = "application/vnd.github+json"
_CLOSE = {"state": "closed", "state_reason": "completed"}


finding_label = finding_marker  # the issue label naming the finding


def _code(value: object) -> str:
    # Inline code: no Markdown, links or @mentions are rendered from values we do not control.
    return "`" + str(value if value is not None else "").replace("`", "'") + "`"


def _name(resource_id: object) -> str:
    return str(resource_id or "").rstrip("/").rsplit("/", 1)[-1] or "-"


def issue_title(t: Mapping[str, Any]) -> str:
    return f"[nsp-drift] {t.get('title') or t.get('rule')}: {_name(t.get('resource'))}"[:250]


def _event_ids(t: Mapping[str, Any]) -> str:
    shown, left = limits.listed_event_ids(t.get("event_ids"))
    return _code(", ".join(shown) or "-") + (f" {limits.more_event_ids(left)}" if left else "")


def issue_body(t: Mapping[str, Any], label: str) -> str:
    why, how = why_and_how(str(t.get("rule", "")))
    resource, perimeter = str(t.get("resource") or ""), str(t.get("perimeter") or "")
    lines = [
        str(t.get("summary", "")),
        "",
        f"- **Resource:** [{_name(resource)}]({portal_url(resource)}) {_code(resource)}",
    ]
    if perimeter:
        lines.append(f"- **Perimeter:** [{_name(perimeter)}]({portal_url(perimeter)})")
    lines += [
        f"- **Rule:** {_code(t.get('rule'))}, severity **{t.get('severity')}**",
        f"- **Changed by:** {_code(t.get('changed_by') or 'unknown')} at {t.get('when') or '-'}",
        f"- **Event ids:** {_event_ids(t)}",
    ]
    if why:
        lines += ["", "### Why it matters", why]
    if how:
        lines += ["", "### How to fix", how]
    trailer = f"\n\n<sub>Finding key {_code(t.get('key'))} (label {_code(label)})</sub>"
    return limits.cap_text("\n".join(lines), limits.GITHUB_MAX_BODY, tail=trailer)


def comment_body(t: Mapping[str, Any]) -> str:
    kind = str(t.get("transition", ""))
    lines = [f"**{kind.capitalize()}** ({t.get('severity')}): {t.get('summary')}"]
    before, after = t.get("before") or {}, t.get("after") or {}
    if kind == "changed" and isinstance(before, Mapping) and isinstance(after, Mapping):
        keys = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
        lines += [f"- {k}: {_code(_value(before.get(k, '-')))} → {_code(_value(after.get(k, '-')))}" for k in keys[:20]]
        lines += [f"- ... and {len(keys) - 20} more changed fields"] if len(keys) > 20 else []
    lines.append(f"By {_code(t.get('changed_by') or 'unknown')} at {t.get('when') or '-'}; events {_event_ids(t)}")
    return limits.cap_text("\n".join(lines), limits.GITHUB_MAX_BODY)


def _value(value: object) -> str:
    return limits.cut_value(str(value))


def _number(issue: Mapping[str, Any]) -> int:
    try:
        return int(issue.get("number", 0))
    except (TypeError, ValueError):
        return 0


def _outcome(result: http.HttpResult, task: TaskRef | None = None, now: float | None = None) -> Outcome:
    outcome = result.outcome(task)
    if result.status == 403 and ("retry-after" in result.headers or result.headers.get("x-ratelimit-remaining") == "0"):
        wait = http.parse_retry_after(result.headers.get("retry-after"))
        if wait is None:
            try:  # primary limit: wait until the window resets
                wait = max(float(result.headers["x-ratelimit-reset"]) - (time.time() if now is None else now), 1.0)
            except (KeyError, ValueError):
                wait = 60.0  # GitHub's advice for a secondary limit without a hint: at least a minute
        return replace(outcome, retryable=True, retry_after=wait)
    return outcome


class GitHubIssuesSender(TaskSender):
    """Issues in one repository (a fine-grained PAT or app token with Issues: read & write)."""

    noun: ClassVar[str] = "issue"

    def __init__(  # noqa: PLR0913 - keyword-only options, one per destination key
        self,
        name: str,
        repository: str,
        token: str,
        *,
        labels: tuple[str, ...] = (),
        assignees: tuple[str, ...] = (),
        api_url: str = "https://api.github.com",
        min_severity: Severity = Severity.INFO,
        retry: http.RetrySettings | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        owner, _, repo = repository.partition("/")
        self._repo = f"{api_url.rstrip('/')}/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"
        self._token = token
        self._labels, self._assignees = labels, assignees
        self._floor = min_severity
        self._retry = retry
        self._timeout = timeout

    def _call(self, method: str, url: str, body: Any = None) -> http.HttpResult:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": MEDIA_TYPE,
            "X-GitHub-Api-Version": API_VERSION,
        }
        return http.request(
            method, url, body, headers, timeout=self._timeout, retry=self._retry, secrets=(self._token,)
        )

    def find_task(self, finding_key: str) -> tuple[http.HttpResult, TaskRef | None]:
        """The issue labelled for this finding (the list API, not the lagging search API): an open
        one if any, else the latest closed one (to reopen)."""
        query = urlencode({"labels": finding_label(finding_key), "state": "all", "per_page": "10"})
        result = self._call("GET", f"{self._repo}/issues?{query}")
        if not result.ok:
            return result, None
        listed = result.json()
        issues = (
            [i for i in listed if isinstance(i, dict) and "pull_request" not in i] if isinstance(listed, list) else []
        )
        if not issues:
            return result, None
        opened = [i for i in issues if i.get("state") == "open"]
        found = min(opened, key=_number) if opened else max(issues, key=_number)
        state = "open" if opened else "closed"
        return result, TaskRef(self.name, finding_key, str(found.get("number")), str(found.get("html_url", "")), state)

    def create(self, t: Mapping[str, Any], finding_key: str) -> Outcome:
        label = finding_label(finding_key)
        body = {
            "title": issue_title(t),
            "body": issue_body(t, label),
            "labels": list(dict.fromkeys(["nsp-drift", label, *self._labels])),
            "assignees": list(self._assignees),
        }
        result = self._call("POST", f"{self._repo}/issues", body)
        if not result.ok:
            return _outcome(result)
        issue = result.json()
        if not isinstance(issue, dict) or issue.get("number") is None:
            return Outcome(ok=False, status=result.status, error=f"HTTP {result.status} from GitHub without an issue")
        number, link = str(issue.get("number")), str(issue.get("html_url", ""))
        task = TaskRef(self.name, finding_key, number, link, "open", occurrence_of(t))
        return _outcome(result, task)

    def comment(self, task: TaskRef, text: str) -> http.HttpResult:
        body = limits.cap_text(text, limits.GITHUB_MAX_BODY)  # with a note prepended (reopen), still within
        return self._call("POST", f"{self._repo}/issues/{quote(task.external_id, safe='')}/comments", {"body": body})

    # -- the hooks of TaskSender ------------------------------------------------------------------

    def _move(self, task: TaskRef, reopen: bool) -> http.HttpResult:
        state = {"state": "open", "state_reason": "reopened"} if reopen else _CLOSE
        return self._call("PATCH", f"{self._repo}/issues/{quote(task.external_id, safe='')}", state)

    def _render(self, t: Mapping[str, Any], reopened: bool = False) -> str:
        note = f"**Reopened**: the finding is open again (occurrence {occurrence_of(t) or '?'}).\n\n"
        return (note if reopened else "") + comment_body(t)

    def _outcome(self, result: http.HttpResult, task: TaskRef | None = None) -> Outcome:
        return _outcome(result, task)
