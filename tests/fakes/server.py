"""A capturing HTTP sink on loopback (a real server in a thread), scriptable to misbehave.

Every request is recorded (method, path, lower-cased headers, body). Scripted answers are served
first, in order (429 with Retry-After, N x 500, 400 with an echo, a slow answer ...); after that
``handle`` answers (200 ``{}`` here; the API fakes override it).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds before answering (a slow server / a client timeout)


@dataclass
class Script:
    """Queued answers, served before the normal behaviour resumes."""

    answers: deque[Answer] = field(default_factory=deque)

    def then(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"", delay: float = 0.0) -> Script:
        self.answers.append(Answer(status, dict(headers or {}), body, delay))
        return self

    def times(self, n: int, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Script:
        for _ in range(n):
            self.then(status, headers, body)
        return self


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that timed out and hung up is part of the scenarios, not noise


class FakeServer:
    """Capturing sink by default (200 ``{}``); subclasses implement an API in ``handle``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script = Script()
        self.failures: list[str] = []  # exceptions raised by ``handle`` (a broken fake fails the test)
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
                if scripted is not None:
                    time.sleep(scripted.delay)
                    status, headers, payload = scripted.status, scripted.headers, scripted.body
                else:
                    try:
                        with outer._lock:  # the API fakes keep state: one request at a time
                            status, headers, payload = outer.handle(request)
                    except Exception as exc:
                        outer.failures.append(f"{type(exc).__name__}: {exc}")
                        status, headers, payload = 500, {}, b'{"message": "fake server error"}'
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        self._server = _Server(("127.0.0.1", 0), Handler)
        # A short poll: shutdown() waits for it, once per server per test.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def hits(self) -> int:
        return len(self.received)

    def handle(self, request: Received) -> Reply:
        return 200, {}, b"{}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, dict(headers or {}), json.dumps(body).encode()


@contextmanager
def running(*servers: FakeServer) -> Iterator[None]:
    for server in servers:
        server.start()
    try:
        yield
    finally:
        for server in servers:
            server.stop()
