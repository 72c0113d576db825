"""Azure DevOps Boards: one work item per open finding (REST api-version 7.1, PAT over Basic auth).

The life cycle is ``shared.adapters.notify.tasks.TaskSender``'s. ``opened`` creates the work item unless
one is already open for the finding, in which case it only comments: the stored TaskRef says so,
and when the ref was lost (a crash between the create and the store write) a WIQL query by the
finding's tag finds the item again, so a re-delivery never opens a second one. ``changed``
comments (and opens one if the finding has just risen to the destination's floor); ``resolved``
moves the item to the done state and comments.

A finding that comes back (its next occurrence) reopens its closed work item: the state moves to
``reopen_state`` (default: the work item type's first state of category "Proposed", read once from
the Work Item Type States API) and a comment says which occurrence it is. One item per finding
keeps its whole history in one place. A new item is opened instead when the old one was deleted
or the process does not allow moving it back (HTTP 400).
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from shared.adapters.notify import http
from shared.adapters.notify.tasks import TaskSender, finding_marker
from shared.core.model import Severity
from shared.core.notify import limits
from shared.core.notify.base import Outcome, TaskRef, occurrence_of
from shared.core.notify.explain import why_and_how
from shared.core.output import portal_url

API_VERSION = "7.1"
COMMENTS_API_VERSION = "7.1-preview.4"  # the comments API has no GA 7.1 version
JSON_PATCH = "application/json-patch+json"
SEVERITY_FIELD = "Microsoft.VSTS.Common.Severity"
PRIORITY_FIELD = "Microsoft.VSTS.Common.Priority"
_SEVERITY_VALUE = {"critical": "1 - Critical", "high": "2 - High", "medium": "3 - Medium", "low": "4 - Low"}
_PRIORITY = {"critical": 1, "high": 2, "medium": 3, "low": 4, "info": 4}
_MAX_IDS = 200  # Work Items - List accepts at most 200 ids

log = logging.getLogger(__name__)


finding_tag = finding_marker  # the work item tag naming the finding


def _e(value: object) -> str:
    return html.escape(str(value if value is not None else ""), quote=True)


def _name(resource_id: object) -> str:
    return str(resource_id or "").rstrip("/").rsplit("/", 1)[-1] or "-"


def work_item_title(t: Mapping[str, Any]) -> str:
    return f"[nsp-drift] {t.get('title') or t.get('rule')}: {_name(t.get('resource'))}"[:255]


def _event_ids(t: Mapping[str, Any]) -> str:
    shown, left = limits.listed_event_ids(t.get("event_ids"))
    return _e(", ".join(shown) or "-") + (f" {limits.more_event_ids(left)}" if left else "")


def description_html(t: Mapping[str, Any], tag: str) -> str:
    why, how = why_and_how(str(t.get("rule", "")))
    resource, perimeter = str(t.get("resource") or ""), str(t.get("perimeter") or "")
    items = [f'Resource: <a href="{_e(portal_url(resource))}">{_e(_name(resource))}</a> (<code>{_e(resource)}</code>)']
    if perimeter:
        items.append(f'Perimeter: <a href="{_e(portal_url(perimeter))}">{_e(_name(perimeter))}</a>')
    items += [
        f"Rule: <code>{_e(t.get('rule'))}</code>, severity <b>{_e(t.get('severity'))}</b>",
        f"Changed by: {_e(t.get('changed_by') or 'unknown')} at {_e(t.get('when') or '-')}",
        f"Event ids: {_event_ids(t)}",
    ]
    parts = [f"<p>{_e(t.get('summary'))}</p>", "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"]
    if why:
        parts.append(f"<h3>Why it matters</h3><p>{_e(why)}</p>")
    if how:
        parts.append(f"<h3>How to fix</h3><p>{_e(how)}</p>")
    trailer = f"<p><small>Finding key <code>{_e(t.get('key'))}</code> (tag <code>{_e(tag)}</code>)</small></p>"
    return limits.cap_text("".join(parts), limits.DEVOPS_MAX_TEXT, html=True, tail=trailer)


def comment_html(t: Mapping[str, Any]) -> str:
    kind = str(t.get("transition", ""))
    text = f"<p><b>{_e(kind.capitalize())}</b> ({_e(t.get('severity'))}): {_e(t.get('summary'))}</p>"
    before, after = t.get("before") or {}, t.get("after") or {}
    if kind == "changed" and isinstance(before, Mapping) and isinstance(after, Mapping):
        rows = [
            f"<li>{_e(k)}: {_e(_value(before.get(k, '-')))} &rarr; {_e(_value(after.get(k, '-')))}</li>"
            for k in sorted(set(before) | set(after))
            if before.get(k) != after.get(k)
        ]
        more = [f"<li>... and {len(rows) - 20} more changed fields</li>"] if len(rows) > 20 else []
        text += "<ul>" + "".join(rows[:20] + more) + "</ul>" if rows else ""
    by = f"<p>By {_e(t.get('changed_by') or 'unknown')} at {_e(t.get('when') or '-')}; events {_event_ids(t)}</p>"
    return limits.cap_text(text + by, limits.DEVOPS_MAX_COMMENT, html=True)


def _value(value: object) -> str:
    return limits.cut_value(str(value))


class AzureDevOpsSender(TaskSender):
    """Work items in one project, authenticated with a PAT (scope: Work Items, read & write)."""

    noun: ClassVar[str] = "work item"
    refuses_reopen: ClassVar[tuple[int, ...]] = (400,)  # the process does not allow moving it back

    def __init__(  # noqa: PLR0913 - keyword-only options, one per destination key
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
        reopen_state: str = "",
        base_url: str = "https://dev.azure.com",
        min_severity: Severity = Severity.INFO,
        retry: http.RetrySettings | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        # Project and type names may contain spaces ("User Story"): percent-encode path segments.
        self._project_url = f"{base_url.rstrip('/')}/{quote(organization, safe='')}/{quote(project, safe='')}"
        self._wit = f"{self._project_url}/_apis/wit"
        self._token = token
        self._type = work_item_type
        self._area, self._assignee, self._tags, self._done = area_path, assigned_to, tags, done_state
        self._reopen_state = reopen_state  # "" = the type's first "Proposed" state, read when first needed
        self._floor = min_severity
        self._retry = retry
        self._timeout = timeout
        # Severity/Priority exist on Bug but not on every type of every process: once the API says
        # a field is unknown (TF51535), stop sending the classification fields.
        self._classify = True

    def _headers(self) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f":{self._token}".encode()).decode()}

    def _call(self, method: str, url: str, body: Any, content_type: str = "application/json") -> http.HttpResult:
        return http.request(
            method,
            url,
            body,
            self._headers(),
            content_type=content_type,
            timeout=self._timeout,
            retry=self._retry,
            secrets=(self._token,),
        )

    # -- the API calls ----------------------------------------------------------------------------

    def _closed_states(self) -> set[str]:
        return {self._done, "Done", "Closed"}

    def find_task(self, finding_key: str) -> tuple[http.HttpResult, TaskRef | None]:
        """The work item tagged for this finding: an open one if any, else the latest closed one
        (to reopen). WIQL returns ids only; their states come from one Work Items - List call,
        made only when the tag matched something."""
        tag = finding_tag(finding_key)
        # Not injectable: the tag is hex from a hash.
        query = (
            "SELECT [System.Id] FROM WorkItems WHERE [System.TeamProject] = @project "  # noqa: S608
            f"AND [System.Tags] CONTAINS '{tag}' AND [System.State] NOT IN ('Removed') ORDER BY [System.Id]"
        )
        result = self._call("POST", f"{self._wit}/wiql?api-version={API_VERSION}", {"query": query})
        if not result.ok:
            return result, None
        answer = result.json()
        found = answer.get("workItems") if isinstance(answer, dict) else None
        ids = [str(i.get("id")) for i in found or [] if isinstance(i, dict) and i.get("id") is not None]
        if not ids:
            return result, None
        fields = urlencode(
            {"ids": ",".join(ids[-_MAX_IDS:]), "fields": "System.Id,System.State", "errorPolicy": "Omit"}
        )
        listed = self._call("GET", f"{self._wit}/workitems?{fields}&api-version={API_VERSION}", None)
        if not listed.ok:
            return listed, None
        page = listed.json()
        items = page.get("value") if isinstance(page, dict) else None
        states = {
            int(i["id"]): str((i.get("fields") or {}).get("System.State", ""))
            for i in items or []
            if isinstance(i, dict) and isinstance(i.get("id"), int)
        }
        if not states:
            return listed, None
        closed = self._closed_states()
        open_ids = sorted(i for i, state in states.items() if state not in closed)
        item_id, state = (open_ids[0], "open") if open_ids else (max(states), "closed")
        url = f"{self._project_url}/_workitems/edit/{item_id}"
        return listed, TaskRef(self.name, finding_key, str(item_id), url, state)

    def _create_ops(self, t: Mapping[str, Any], finding_key: str) -> list[dict[str, Any]]:
        tag = finding_tag(finding_key)
        fields: dict[str, Any] = {
            "System.Title": work_item_title(t),
            "System.Description": description_html(t, tag),
            "System.Tags": "; ".join(dict.fromkeys(["nsp-drift", tag, *self._tags])),
        }
        if self._area:
            fields["System.AreaPath"] = self._area
        if self._assignee:
            fields["System.AssignedTo"] = self._assignee
        severity = str(t.get("severity", "medium")).lower()
        if self._classify:
            fields[PRIORITY_FIELD] = _PRIORITY.get(severity, 3)
            fields[SEVERITY_FIELD] = _SEVERITY_VALUE.get(severity, "4 - Low")
        return [{"op": "add", "path": f"/fields/{k}", "value": v} for k, v in fields.items()]

    def create(self, t: Mapping[str, Any], finding_key: str) -> Outcome:
        url = f"{self._wit}/workitems/${quote(self._type, safe='')}?api-version={API_VERSION}"
        result = self._call("POST", url, self._create_ops(t, finding_key), JSON_PATCH)
        if result.status == 400 and self._classify and b"TF51535" in result.body:
            self._classify = False
            result = self._call("POST", url, self._create_ops(t, finding_key), JSON_PATCH)
        if not result.ok:
            return result.outcome()
        item = result.json()
        if not isinstance(item, dict) or item.get("id") is None:
            # e.g. 203 with a sign-in page: the organization does not accept this PAT as is.
            error = f"HTTP {result.status} from Azure DevOps without a work item (check the PAT and organization)"
            return Outcome(ok=False, status=result.status, error=error)
        item_id = str(item["id"])
        link = item.get("_links", {}).get("html", {}).get("href") or f"{self._project_url}/_workitems/edit/{item_id}"
        return result.outcome(TaskRef(self.name, finding_key, item_id, str(link), "open", occurrence_of(t)))

    def comment(self, task: TaskRef, text: str) -> http.HttpResult:
        url = f"{self._wit}/workItems/{quote(task.external_id, safe='')}/comments?api-version={COMMENTS_API_VERSION}"
        return self._call("POST", url, {"text": limits.cap_text(text, limits.DEVOPS_MAX_COMMENT, html=True)})

    def _reopen_target(self) -> tuple[http.HttpResult | None, str]:
        """The state a reopened item moves to: configured, or the type's first "Proposed" state."""
        if self._reopen_state:
            return None, self._reopen_state
        url = f"{self._wit}/workitemtypes/{quote(self._type, safe='')}/states?api-version={API_VERSION}"
        result = self._call("GET", url, None)
        answer = result.json() if result.ok else None
        states = answer.get("value") if isinstance(answer, dict) else None
        for state in states or []:
            if isinstance(state, dict) and state.get("category") == "Proposed" and state.get("name"):
                self._reopen_state = str(state["name"])
                return result, self._reopen_state
        return result, ""

    # -- the hooks of TaskSender ------------------------------------------------------------------

    def _move(self, task: TaskRef, reopen: bool) -> http.HttpResult | None:
        state = self._done
        if reopen:
            lookup, state = self._reopen_target()
            if not state:
                return lookup if lookup is not None and lookup.retryable else None
        url = f"{self._wit}/workitems/{quote(task.external_id, safe='')}?api-version={API_VERSION}"
        return self._call("PATCH", url, [{"op": "add", "path": "/fields/System.State", "value": state}], JSON_PATCH)

    def _render(self, t: Mapping[str, Any], reopened: bool = False) -> str:
        note = f"<p><b>Reopened</b>: the finding is open again (occurrence {occurrence_of(t) or '?'}).</p>"
        return (note if reopened else "") + comment_html(t)
