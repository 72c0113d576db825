"""A real HTTPS Azure Resource Manager on loopback, serving an estate to the real SDK clients.

TLS with certificates from ``trustme`` (clients trust its CA with ``connection_verify``), a
configurable per-request latency, request counting per path template, an optional ARM read
token bucket (250, refilling 25/s per subscription) that answers 429 with ``Retry-After``, and
fault injection for the chaos tests (429, 500, 503, connection resets, responses slower than the
client timeout, truncated JSON). Bounded: every fault is drawn from a seeded RNG, and the server
stops when the context manager exits.
"""

from __future__ import annotations

import json
import random
import re
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.adapters.estate import Estate
from shared.wiring import _StaticToken

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def path_template(path: str) -> str:
    """``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}``."""
    parts = urlsplit(path).path.strip("/").split("/")
    out: list[str] = []
    after_namespace = -1  # segments since the provider namespace: even = type, odd = name
    for i, part in enumerate(parts):
        previous = parts[i - 1].lower() if i else ""
        if previous == "subscriptions":
            out.append("{sub}")
        elif previous == "resourcegroups":
            out.append("{rg}")
        elif previous == "providers":
            out.append(part)
            after_namespace = 0
            continue
        elif after_namespace >= 0 and after_namespace % 2 == 1 and part.lower() != "default":
            out.append("{name}")
        else:
            out.append(part)
        if after_namespace >= 0:
            after_namespace += 1
    return "/" + "/".join(out)


@dataclass
class Faults:
    """Per-request fault rates (0..1). ``slow`` sleeps ``slow_seconds`` (beyond the client timeout)."""

    throttle: float = 0.0
    server_error: float = 0.0
    unavailable: float = 0.0
    reset: float = 0.0
    slow: float = 0.0
    truncated: float = 0.0
    slow_seconds: float = 3.0
    seed: int = 7
    injected: Counter[str] = field(default_factory=Counter)

    def draw(self, rng: random.Random) -> str:
        roll = rng.random()
        for name in ("throttle", "server_error", "unavailable", "reset", "slow", "truncated"):
            rate = float(getattr(self, name))
            if roll < rate:
                return name
            roll -= rate
        return ""


class TokenBucket:
    """ARM's read bucket per subscription: capacity 250, refill 25 per second."""

    def __init__(self, capacity: float = 250.0, rate: float = 25.0) -> None:
        self.capacity, self.rate = capacity, rate
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> tuple[bool, int]:
        now = time.monotonic()
        with self._lock:
            tokens, at = self._state.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._state[key] = (tokens, now)
                return False, 0
            self._state[key] = (tokens - 1, now)
            return True, int(tokens - 1)


class ArmServer:
    def __init__(
        self, estate: Estate, latency: float = 0.05, bucket: TokenBucket | None = None, faults: Faults | None = None
    ) -> None:
        import trustme

        self.estate = estate
        self.latency = latency
        self.bucket = bucket
        self.faults = faults or Faults()
        self.counts: Counter[str] = Counter()
        self.throttled = 0
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._dir = tempfile.mkdtemp(prefix="nsp-drift-arm-")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_path = str(Path(self._dir) / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in {"Content-Type": "application/json; charset=utf-8", **(headers or {})}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else b""
                outer.serve(self, payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def serve(self, handler: Any, payload: bytes) -> None:
        path = handler.path
        with self._lock:
            self.counts[f"{handler.command} {path_template(path)}"] += 1
            fault = self.faults.draw(self._rng)
            if fault:
                self.faults.injected[fault] += 1
        if self.latency:
            time.sleep(self.latency)
        subscription = _GUID.search(path)
        headers: dict[str, str] = {}
        if self.bucket is not None and handler.command == "GET":
            allowed, remaining = self.bucket.take(subscription.group(0).lower() if subscription else "tenant")
            headers["x-ms-ratelimit-remaining-subscription-reads"] = str(remaining)
            if not allowed:
                with self._lock:
                    self.throttled += 1
                handler._reply(
                    429, b'{"error":{"code":"TooManyRequests","message":"throttled"}}', {**headers, "Retry-After": "1"}
                )
                return
        if fault == "throttle":
            handler._reply(429, b'{"error":{"code":"TooManyRequests","message":"injected"}}', {"Retry-After": "1"})
            return
        if fault in {"server_error", "unavailable"}:
            status = 500 if fault == "server_error" else 503
            handler._reply(status, b'{"error":{"code":"InternalServerError","message":"injected"}}')
            return
        if fault == "reset":
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            handler.connection.close()
            handler.close_connection = True
            return
        if fault == "slow":
            time.sleep(self.faults.slow_seconds)
        if handler.command == "POST" and "/providers/microsoft.resourcegraph/resources" in path.lower():
            reply = self.estate.resource_graph(json.loads(payload or b"{}"))
        else:
            reply = self.estate.answer(handler.command, f"https://management.azure.com{path}")
        body = reply.body
        if fault == "truncated" and reply.status == 200:
            body = body[: max(len(body) // 2, 1)]
        handler._reply(reply.status, body, {**dict(reply.headers), **headers})

    def start(self) -> ArmServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def total(self) -> int:
        return sum(self.counts.values())


@contextmanager
def serving(estate: Estate, **kwargs: Any) -> Iterator[ArmServer]:
    server = ArmServer(estate, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


# The loopback ARM authenticates nobody: the same static credential as the offline estate.
StaticToken = _StaticToken
