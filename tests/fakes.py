"""Real HTTP servers on loopback that stand in for Teams, a webhook receiver, Azure DevOps and
GitHub: they keep what they were sent, check auth headers, and can be scripted to fail."""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Script:
    """Queued answers (status, headers, body) served before the normal behaviour resumes."""

    answers: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)

    def then(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Script:
        self.answers.append((status, headers or {}, body))
        return self


class FakeServer:
    """Capturing sink by default (200 {}); subclasses implement an API in ``handle``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script = Script()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with outer._lock:
                    outer.received.append(request)
                    scripted = outer.script.answers.popleft() if outer.script.answers else None
                status, headers, payload = scripted if scripted else outer.handle(request)
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def handle(self, request: Received) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, b"{}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeAzureDevOps(FakeServer):
    """Work items with JSON Patch, comments and state; Basic auth with the PAT required."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.expected = "Basic " + base64.b64encode(f":{token}".encode()).decode()
        self.items: dict[int, dict[str, Any]] = {}

    def handle(self, request: Received) -> tuple[int, dict[str, str], bytes]:
        if request.headers.get("authorization") != self.expected:
            return 401, {}, b'{"message": "unauthorized"}'
        path = request.path.split("?", 1)[0]
        if request.method == "POST" and "/_apis/wit/workitems/$" in path:
            assert request.headers.get("content-type", "").startswith("application/json-patch+json")
            fields = {op["path"].removeprefix("/fields/"): op["value"] for op in request.json()}
            item_id = len(self.items) + 1
            self.items[item_id] = {"fields": {**fields, "System.State": "New"}, "comments": []}
            body = {
                "id": item_id,
                "fields": fields,
                "_links": {"html": {"href": f"{self.url}/_workitems/edit/{item_id}"}},
            }
            return 200, {}, json.dumps(body).encode()
        if request.method == "POST" and path.endswith("/comments"):
            item_id = int(path.split("/workItems/")[1].split("/")[0])
            self.items[item_id]["comments"].append(request.json()["text"])
            return 200, {}, b'{"id": 1}'
        if request.method == "PATCH" and "/_apis/wit/workitems/" in path:
            item_id = int(path.rsplit("/", 1)[1])
            for op in request.json():
                self.items[item_id]["fields"][op["path"].removeprefix("/fields/")] = op["value"]
            return 200, {}, json.dumps({"id": item_id}).encode()
        return 404, {}, b'{"message": "not found"}'


class FakeGitHub(FakeServer):
    """Issues, comments and closing; Bearer token and the GitHub media type required."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.issues: dict[int, dict[str, Any]] = {}

    def handle(self, request: Received) -> tuple[int, dict[str, str], bytes]:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, b'{"message": "Bad credentials"}'
        if request.headers.get("accept") != "application/vnd.github+json":
            return 415, {}, b'{"message": "media type"}'
        parts = request.path.split("?", 1)[0].strip("/").split("/")
        if request.method == "POST" and parts[-1] == "issues":
            number = len(self.issues) + 1
            self.issues[number] = {**request.json(), "state": "open", "comments": []}
            return 201, {}, json.dumps({"number": number, "html_url": f"{self.url}/issues/{number}"}).encode()
        if request.method == "POST" and parts[-1] == "comments":
            self.issues[int(parts[-2])]["comments"].append(request.json()["body"])
            return 201, {}, b"{}"
        if request.method == "PATCH" and parts[-2] == "issues":
            self.issues[int(parts[-1])].update(request.json())
            return 200, {}, b"{}"
        return 404, {}, b'{"message": "Not Found"}'


@contextmanager
def running(*servers: FakeServer) -> Iterator[None]:
    for server in servers:
        server.start()
    try:
        yield
    finally:
        for server in servers:
            server.stop()
