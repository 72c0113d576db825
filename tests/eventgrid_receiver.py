"""A loopback HTTPS Event Grid publishing endpoint for the ``eventgrid`` destination's tests.

It answers what the service answers and checks what the service checks, per the data-plane
references (Event Grid "Publish Cloud Event Events", api-version 2018-01-01, for custom topics;
namespaces "Publish Cloud Events", api-version 2024-06-01):

- custom topic: ``POST /api/events?api-version=2018-01-01``, authenticated by ``aeg-sas-key: <key>``
  (or a Microsoft Entra bearer token);
- namespace topic: ``POST /topics/{topic}:publish?api-version=2024-06-01``, authenticated by
  ``Authorization: SharedAccessKey <key>`` (or a bearer token);
- ``Content-Type: application/cloudevents-batch+json`` (a charset may follow), a JSON array of
  CloudEvents 1.0, each with ``specversion``, ``id``, ``source`` and ``type``;
- at most 1 MB a request (else 413).

Answers 200 with an empty body (custom topic) or ``{}`` (namespace) to an accepted request, 401
to a wrong or missing credential, 400 to a malformed body, 404 to another path. TLS from a
``trustme`` CA (``ca_path``); ``fail_first`` answers 503 (with ``retry_after``: a Retry-After
header) to that many requests first. Every request is recorded in ``requests``.
"""

from __future__ import annotations

import json
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

CUSTOM_TOPIC_API_VERSION = "2018-01-01"
NAMESPACE_API_VERSION = "2024-06-01"
MAX_REQUEST_BYTES = 1_048_576


@dataclass
class Received:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int = 0
    reason: str = ""  # why it was refused (empty when accepted)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Config:
    topic: str | None = None
    key: str | None = None
    token: str | None = None
    fail_first: int = 0
    retry_after: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


class EventGridReceiver:
    """``topic``: a namespace topic's name (None: a custom topic); ``key`` and/or ``token``: the
    credentials accepted."""

    def __init__(
        self,
        topic: str | None = None,
        key: str | None = None,
        token: str | None = None,
        fail_first: int = 0,
        retry_after: str | None = None,
    ) -> None:
        self.config = _Config(topic, key, token, fail_first, retry_after)
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="eg-receiver-"))
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = str(self._dir / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                item = Received(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    payload,
                )
                status, extra = outer._judge(item)
                body = b"" if status == 200 and outer.config.topic is None else b"{}"
                if status != 200:
                    body = json.dumps({"error": {"code": str(status), "message": item.reason}}).encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = _any
            do_GET = _any
            do_PUT = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="eventgrid-receiver", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """What the portal shows as the topic endpoint (custom topic: with /api/events)."""
        if self.config.topic is None:
            return f"https://127.0.0.1:{self.port}/api/events"
        return f"https://127.0.0.1:{self.port}"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every CloudEvent accepted, in order."""
        with self._lock:
            return list(self.config.events)

    @property
    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.status == 200]

    def _judge(self, item: Received) -> tuple[int, dict[str, str]]:
        status, extra = self._decide(item)
        item.status = status
        with self._lock:
            self.requests.append(item)
            if status == 200:
                self.config.events.extend(item.json())
        return status, extra

    def _refuse(self, item: Received, status: int, reason: str) -> tuple[int, dict[str, str]]:
        item.reason = reason
        return status, {}

    def _decide(self, item: Received) -> tuple[int, dict[str, str]]:
        config = self.config
        with self._lock:
            if config.fail_first > 0:
                config.fail_first -= 1
                item.reason = "fail_first"
                return 503, ({"Retry-After": config.retry_after} if config.retry_after else {})
        if item.method != "POST":
            return self._refuse(item, 405, "method")
        if config.topic is None:
            path, version, key_header = "/api/events", CUSTOM_TOPIC_API_VERSION, "aeg-sas-key"
        else:
            path, version, key_header = f"/topics/{config.topic}:publish", NAMESPACE_API_VERSION, "authorization"
        if item.path != path:
            return self._refuse(item, 404, f"path {item.path}")
        if item.query.get("api-version") != [version]:
            return self._refuse(item, 400, f"api-version {item.query.get('api-version')}")
        offered = item.headers.get(key_header, "")
        bearer = item.headers.get("authorization", "")
        ok = False
        if config.key is not None:
            wanted = config.key if config.topic is None else f"SharedAccessKey {config.key}"
            ok = offered == wanted
        if config.token is not None and bearer == f"Bearer {config.token}":
            ok = True
        if not ok:
            # Echo what was offered, as a careless proxy might: the sender must never store or log it.
            return self._refuse(item, 401, f"credential {offered or bearer!r} refused")
        media = item.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/cloudevents-batch+json":
            return self._refuse(item, 400, f"content type {item.headers.get('content-type')}")
        if len(item.body) > MAX_REQUEST_BYTES:
            return self._refuse(item, 413, f"{len(item.body)} bytes")
        try:
            events = item.json()
        except ValueError:
            return self._refuse(item, 400, "not JSON")
        if not isinstance(events, list) or not events:
            return self._refuse(item, 400, "not a non-empty JSON array")
        for event in events:
            if not isinstance(event, dict) or event.get("specversion") != "1.0":
                return self._refuse(item, 400, "specversion")
            if not all(isinstance(event.get(k), str) and event.get(k) for k in ("id", "source", "type")):
                return self._refuse(item, 400, "id/source/type")
        return 200, {}

    def start(self) -> EventGridReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for path in self._dir.iterdir():
            with suppress(OSError):
                path.unlink()
        with suppress(OSError):
            self._dir.rmdir()


@contextmanager
def receiving(**kwargs: Any) -> Iterator[EventGridReceiver]:
    receiver = EventGridReceiver(**kwargs).start()
    try:
        yield receiver
    finally:
        receiver.stop()
