"""A fake GitHub issues API: create, list by label and state, comment, close and reopen.

Checks what we rely on: ``Authorization: Bearer <token>`` (401 otherwise), the GitHub media type
and the pinned API version header; an update's ``state`` and ``state_reason`` are validated as
GitHub does (422), and a state change without a reason gets GitHub's default (``completed`` on
close, ``reopened`` on reopen).
"""

from __future__ import annotations

import re
from typing import Any

from tests.fakes.server import FakeServer, Received, Reply, reply

MAX_BODY = 65_536  # GitHub refuses a longer issue or comment body with 422 "body is too long"
_ISSUES = re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)/issues(?:/(?P<number>\d+)(?P<comments>/comments)?)?$")


class FakeGitHub(FakeServer):
    def __init__(self, token: str, repository: str | None = None) -> None:
        super().__init__()
        self.token = token
        self.repository = repository
        self.issues: dict[int, dict[str, Any]] = {}
        self._numbers = 0  # like GitHub: a number is never reused, even after a deletion

    def handle(self, request: Received) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return reply(401, {"message": "Bad credentials"})
        if request.headers.get("accept") != "application/vnd.github+json":
            return reply(415, {"message": "Unsupported media type"})
        if request.headers.get("x-github-api-version") != "2022-11-28":
            return reply(400, {"message": "API version header missing"})
        match = _ISSUES.match(request.route)
        if match is None or (self.repository and f"{match['owner']}/{match['repo']}" != self.repository):
            return reply(404, {"message": "Not Found"})
        number = int(match["number"]) if match["number"] else None
        if number is None and request.method == "POST":
            return self._create(request)
        if number is None and request.method == "GET":
            return self._list(request)
        if number is not None and number not in self.issues:
            return reply(404, {"message": "Not Found"})
        if number is not None and match["comments"] and request.method == "POST":
            body = request.json()["body"]
            if len(body) > MAX_BODY:
                return _too_long()
            self.issues[number]["comments"].append(body)
            return reply(201, {"id": len(self.issues[number]["comments"]), "body": body})
        if number is not None and not match["comments"] and request.method == "PATCH":
            return self._update(number, request.json())
        return reply(404, {"message": "Not Found"})

    def _update(self, number: int, body: dict[str, Any]) -> Reply:
        issue = self.issues[number]
        state, reason = body.get("state", issue["state"]), body.get("state_reason")
        reasons = {"closed": {"completed", "not_planned", "duplicate"}, "open": {"reopened"}}
        if state not in reasons or (reason is not None and reason not in reasons[state]):
            return reply(422, {"message": "Validation Failed", "errors": [{"resource": "Issue", "field": "state"}]})
        if state != issue["state"]:
            body = {**body, "state_reason": reason or ("completed" if state == "closed" else "reopened")}
        issue.update(body)
        return reply(200, self._public(number))

    def _public(self, number: int) -> dict[str, Any]:
        issue = self.issues[number]
        return {
            "number": number,
            "html_url": f"{self.url}/issues/{number}",
            "state": issue["state"],
            "title": issue.get("title"),
            "labels": [{"name": n} for n in issue.get("labels", [])],
        }

    def _create(self, request: Received) -> Reply:
        body = request.json()
        if not isinstance(body.get("title"), str) or not body["title"]:
            return reply(422, {"message": "Validation Failed"})
        if len(body.get("body") or "") > MAX_BODY:
            return _too_long()
        self._numbers += 1
        number = self._numbers
        self.issues[number] = {**body, "state": "open", "comments": []}
        return reply(201, self._public(number))

    def _list(self, request: Received) -> Reply:
        wanted = {s for s in request.query.get("labels", "").split(",") if s}
        state = request.query.get("state", "open")
        listed = [
            self._public(n)
            for n, issue in sorted(self.issues.items())
            if wanted <= set(issue.get("labels", [])) and (state == "all" or issue["state"] == state)
        ]
        return reply(200, listed[: int(request.query.get("per_page", "30"))])

    def open_issues(self) -> list[int]:
        return [n for n, issue in self.issues.items() if issue["state"] == "open"]


def _too_long() -> Reply:
    error = {
        "resource": "Issue",
        "code": "custom",
        "field": "body",
        "message": f"body is too long (maximum is {MAX_BODY} characters)",
    }
    return reply(422, {"message": "Validation Failed", "errors": [error]})
