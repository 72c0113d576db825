"""A fake Azure DevOps work item API: create (JSON Patch), WIQL by tag, comments, state changes,
Work Items - List (ids + fields) and Work Item Type States - List.

It checks what the real service checks and we rely on: Basic auth carrying the PAT (401 otherwise),
api-version on every call, the JSON Patch media type, known fields per work item type (TF51535,
like a process whose Task has no Severity), deleted items (404), and states: a new item starts in
its type's first "Proposed" state, and a state outside the type's states is a rule error (400,
TF401320). The default states are the Basic process's (To Do, Doing, Done); ``states_by_type``
sets others (e.g. Agile's New / Active / Resolved / Closed / Removed), ``frozen_states`` makes
moving out of a state a rule error (a process that forbids reopening).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote

from tests.fakes.server import FakeServer, Received, Reply, reply

BASIC_STATES = (("To Do", "Proposed"), ("Doing", "InProgress"), ("Done", "Completed"))

_WIT = re.compile(r"^/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/wit/(?P<rest>.+)$")


class FakeAzureDevOps(FakeServer):
    def __init__(
        self,
        token: str,
        organization: str | None = None,
        project: str | None = None,
        fields_by_type: dict[str, set[str]] | None = None,
        states_by_type: dict[str, tuple[tuple[str, str], ...]] | None = None,
    ) -> None:
        super().__init__()
        self.token = token
        self.organization, self.project = organization, project
        self.fields_by_type = fields_by_type  # None: every field exists on every type
        self.states_by_type = states_by_type  # None: every type has the Basic process's states
        self.frozen_states: set[str] = set()  # states an item may not leave (a rule error)
        self.items: dict[int, dict[str, Any]] = {}
        self.deleted: set[int] = set()
        self._ids = 0  # ids are never reused

    def _authorised(self, request: Received) -> bool:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        try:
            _user, _, password = base64.b64decode(credential, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return password == self.token

    def handle(self, request: Received) -> Reply:
        if not self._authorised(request):
            return reply(401, {"message": "TF400813: The user is not authorized to access this resource."})
        match = _WIT.match(request.route)
        if match is None:
            return reply(404, {"message": "not found"})
        org, project = unquote(match["org"]), unquote(match["project"])
        if (self.organization and org != self.organization) or (self.project and project != self.project):
            return reply(404, {"message": f"TF200016: project {project} does not exist"})
        rest = match["rest"]
        version = request.query.get("api-version")
        if request.method == "POST" and rest.startswith("workitems/$"):
            return self._create(request, unquote(rest.removeprefix("workitems/$")), version)
        if request.method == "POST" and rest == "wiql":
            return self._wiql(request, version)
        comment = re.fullmatch(r"workItems/(\d+)/comments", rest)
        if request.method == "POST" and comment:
            return self._comment(request, int(comment[1]), version)
        update = re.fullmatch(r"workitems/(\d+)", rest)
        if request.method == "PATCH" and update:
            return self._update(request, int(update[1]), version)
        if request.method == "GET" and rest == "workitems":
            return self._list(request, version)
        states = re.fullmatch(r"workitemtypes/([^/]+)/states", rest)
        if request.method == "GET" and states:
            return self._states(unquote(states[1]), version)
        return reply(404, {"message": "not found"})

    def states_of(self, item_type: str) -> tuple[tuple[str, str], ...]:
        if self.states_by_type is None:
            return BASIC_STATES
        return self.states_by_type.get(item_type, ())

    def _states(self, item_type: str, version: str | None) -> Reply:
        if version != "7.1":
            return reply(400, {"message": "api-version 7.1 expected"})
        states = self.states_of(item_type)
        if not states:
            return reply(404, {"message": f"VS402323: Work item type {item_type} does not exist."})
        colours = {"Proposed": "b2b2b2", "InProgress": "007acc", "Resolved": "ff9d00", "Completed": "339933"}
        value = [{"name": n, "color": colours.get(c, "ffffff"), "category": c} for n, c in states]
        return reply(200, {"count": len(value), "value": value})

    def _list(self, request: Received, version: str | None) -> Reply:
        """Work Items - List: ``ids`` (at most 200), ``fields``; ``errorPolicy=Omit`` gives null for
        a missing item instead of failing the call."""
        if version != "7.1":
            return reply(400, {"message": "api-version 7.1 expected"})
        ids = [int(i) for i in request.query.get("ids", "").split(",") if i.strip()]
        if not ids or len(ids) > 200:
            return reply(400, {"message": "VS403474: between 1 and 200 ids expected"})
        wanted = [f for f in request.query.get("fields", "").split(",") if f]
        omit = request.query.get("errorPolicy", "").lower() == "omit"
        value: list[Any] = []
        for item_id in ids:
            if item_id not in self.items or item_id in self.deleted:
                if not omit:
                    return reply(404, {"message": f"TF401232: Work item {item_id} does not exist"})
                value.append(None)
                continue
            fields = self.items[item_id]["fields"]
            chosen = {f: fields[f] for f in wanted if f in fields} if wanted else dict(fields)
            if "System.Id" in wanted:
                chosen["System.Id"] = item_id
            value.append(
                {"id": item_id, "rev": 1, "fields": chosen, "url": f"{self.url}/_apis/wit/workItems/{item_id}"}
            )
        return reply(200, {"count": len(value), "value": value})

    def _patch_fields(self, request: Received) -> dict[str, Any] | Reply:
        if not request.headers.get("content-type", "").startswith("application/json-patch+json"):
            return reply(415, {"message": "expected application/json-patch+json"})
        fields: dict[str, Any] = {}
        for op in request.json():
            if op.get("op") != "add" or not str(op.get("path", "")).startswith("/fields/"):
                return reply(400, {"message": f"unsupported operation {op}"})
            fields[op["path"].removeprefix("/fields/")] = op["value"]
        return fields

    def _create(self, request: Received, item_type: str, version: str | None) -> Reply:
        if version != "7.1":
            return reply(400, {"message": "api-version 7.1 expected"})
        fields = self._patch_fields(request)
        if isinstance(fields, tuple):
            return fields
        allowed = None if self.fields_by_type is None else self.fields_by_type.get(item_type, set())
        if allowed is not None:
            unknown = sorted(f for f in fields if not f.startswith("System.") and f not in allowed)
            if unknown:
                return reply(400, {"message": f"TF51535: Cannot find field {unknown[0]}."})
        proposed = [name for name, category in self.states_of(item_type) if category == "Proposed"]
        self._ids += 1
        item_id = self._ids
        self.items[item_id] = {
            "type": item_type,
            "fields": {**fields, "System.State": proposed[0] if proposed else "New", "System.WorkItemType": item_type},
            "comments": [],
        }
        href = f"{self.url}/{request.route.split('/_apis/')[0].lstrip('/')}/_workitems/edit/{item_id}"
        return reply(200, {"id": item_id, "rev": 1, "fields": fields, "_links": {"html": {"href": href}}})

    def _wiql(self, request: Received, version: str | None) -> Reply:
        if version != "7.1":
            return reply(400, {"message": "api-version 7.1 expected"})
        query = str(request.json().get("query", ""))
        tag = re.search(r"\[System\.Tags\] CONTAINS '([^']*)'", query)
        states = re.search(r"\[System\.State\] NOT IN \(([^)]*)\)", query)
        excluded = {s.strip().strip("'") for s in states[1].split(",")} if states else set()
        found = [
            {"id": item_id, "url": f"{self.url}/_apis/wit/workItems/{item_id}"}
            for item_id, item in sorted(self.items.items())
            if item_id not in self.deleted
            and tag is not None
            and tag[1] in [t.strip() for t in str(item["fields"].get("System.Tags", "")).split(";")]
            and item["fields"].get("System.State") not in excluded
        ]
        return reply(200, {"queryType": "flat", "workItems": found})

    def _comment(self, request: Received, item_id: int, version: str | None) -> Reply:
        if version != "7.1-preview.4":
            return reply(400, {"message": "api-version 7.1-preview.4 expected"})
        if item_id not in self.items or item_id in self.deleted:
            return reply(404, {"message": f"TF401232: Work item {item_id} does not exist"})
        text = request.json()["text"]
        self.items[item_id]["comments"].append(text)
        return reply(200, {"id": len(self.items[item_id]["comments"]), "text": text})

    def _update(self, request: Received, item_id: int, version: str | None) -> Reply:
        if version != "7.1":
            return reply(400, {"message": "api-version 7.1 expected"})
        if item_id not in self.items or item_id in self.deleted:
            return reply(404, {"message": f"TF401232: Work item {item_id} does not exist"})
        fields = self._patch_fields(request)
        if isinstance(fields, tuple):
            return fields
        item = self.items[item_id]
        state = fields.get("System.State")
        current = item["fields"].get("System.State")
        allowed = {name for name, _ in self.states_of(item["type"])}
        if state is not None and (state not in allowed or (current in self.frozen_states and state != current)):
            return reply(
                400,
                {
                    "message": "TF401320: Rule Error for field State. Error code: Required, HasValues, "
                    "LimitedToValues, AllowsOldValue, InvalidEmpty.",
                    "typeKey": "RuleValidationException",
                },
            )
        item["fields"].update(fields)
        return reply(200, {"id": item_id, "fields": self.items[item_id]["fields"]})

    def open_items(self) -> list[int]:
        return [i for i, item in self.items.items() if item["fields"].get("System.State") != "Done"]
