"""A real HTTPS Azure Resource Manager on loopback, serving an estate to the real SDK clients.

- TLS with certificates from ``trustme``: a CA and a server certificate for ``127.0.0.1`` and
  ``localhost`` (and ``hostnames``: a named cloud's hosts, reached through a proxy that tunnels
  there, tests/tunnel.py); clients trust the CA the way a private cloud's users do:
  ``SSL_CERT_FILE=server.ca_path``. ``hosts`` counts requests by their Host header. The handshake
  runs in the connection's own thread, so a slow or broken client never stalls ``accept``.
- One thread per connection (HTTP/1.1 keep-alive), a listen backlog sized for a burst of new
  connections; ARM GETs and ``POST /providers/Microsoft.ResourceGraph/resources`` are answered
  by ``Estate.answer`` (the same replies the offline transport gives).
- A configurable latency per request (default 50 ms), slept in the connection's thread.
- Request counting per path template (ids replaced by ``{sub}``, ``{rg}``, ``{name}``).
- ARM's read bucket (``TokenBucket``: 250 per subscription, refilling 25/s), optional: every GET
  answer then carries ``x-ms-ratelimit-remaining-subscription-reads`` (tenant-level reads:
  ``-tenant-reads``) and an empty bucket answers 429 with ``Retry-After`` (whole seconds until a
  token is back, at least 1).
- Resource Graph's per-user quota (``GraphQuota``: 15 queries per 5-second window), optional:
  every query answer carries ``x-ms-user-quota-remaining``/``x-ms-user-quota-resets-after``,
  and a query beyond the quota answers 429 with those headers (no ``Retry-After``, like the
  service's guidance describes).
- The authority of a custom cloud too: ``POST /{tenant}/oauth2/v2.0/token`` (the client-credentials
  grant azure-identity's ``ClientSecretCredential`` sends) answers an access token, so the product
  runs unchanged with ``NSP_DRIFT_CLOUD`` and ``NSP_DRIFT_AUTHORITY_HOST`` set to ``base_url``, a
  service principal in ``AZURE_TENANT_ID``/``AZURE_CLIENT_ID``/``AZURE_CLIENT_SECRET`` and the CA in
  ``SSL_CERT_FILE`` (``environment()`` gives exactly that). Token requests are not ARM requests: they
  are recorded in ``token_requests``, and every ARM request is tallied in ``authorization`` by whether
  it carried a token this server issued.
- Fault injection for the chaos tests (429, 500, 503, connection resets, responses slower than
  the client timeout, truncated JSON), drawn from a seeded RNG.

Bounded: ``serving()`` stops the server when its block exits; a server also stops by itself
after ``max_seconds`` (default 15 minutes) or ``max_requests``, whichever comes first, so a test
or benchmark that forgets it cannot leave it running. ``stop()`` removes the certificate files.
"""

from __future__ import annotations

import json
import math
import random
import re
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.adapters.estate import Estate

_GUID = re.compile(r"/subscriptions/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})")
_RESOURCE_GRAPH = "/providers/microsoft.resourcegraph/resources"
_TOKEN = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
READS_HEADER = "x-ms-ratelimit-remaining-subscription-reads"
TENANT_READS_HEADER = "x-ms-ratelimit-remaining-tenant-reads"


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
    """ARM's read bucket per subscription (and one for tenant-level reads): capacity 250, refill 25/s.

    ``clock``: the time source (tests pass a virtual clock so the refill cannot depend on how fast
    the machine runs)."""

    def __init__(
        self, capacity: float = 250.0, rate: float = 25.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity, self.rate = capacity, rate
        self._clock = clock
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.rejected: Counter[str] = Counter()

    def take(self, key: str) -> tuple[bool, int, float]:
        """(allowed, tokens left, seconds until the next token when refused)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._state.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._state[key] = (tokens, now)
                self.rejected[key] += 1
                return False, 0, (1 - tokens) / self.rate
            self._state[key] = (tokens - 1, now)
            return True, int(tokens - 1), 0.0


class GraphQuota:
    """Resource Graph's per-user quota: ``limit`` queries per fixed ``window`` seconds (``clock``: as
    for ``TokenBucket``)."""

    def __init__(self, limit: int = 15, window: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window = limit, window
        self._clock = clock
        self._start = clock()
        self._used = 0
        self._lock = threading.Lock()
        self.rejected = 0

    def take(self) -> tuple[bool, int, float]:
        """(allowed, queries left in this window, seconds until the window resets)."""
        now = self._clock()
        with self._lock:
            if now - self._start >= self.window:
                self._start, self._used = now, 0
            resets = self.window - (now - self._start)
            if self._used >= self.limit:
                self.rejected += 1
                return False, 0, resets
            self._used += 1
            return True, self.limit - self._used, resets


def _hhmmss(seconds: float) -> str:
    whole = max(math.ceil(seconds), 0)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # aiohttp opens up to 100 connections per client at once

    def __init__(self, context: ssl.SSLContext, handler: type[BaseHTTPRequestHandler]) -> None:
        self.tls = context
        super().__init__(("127.0.0.1", 0), handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's thread (ThreadingMixIn): the TLS handshake happens here, not in accept.
        try:
            # No Nagle: headers and body leave at once (else a 40 ms delayed-ACK stall per answer).
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            with suppress(OSError):
                tls.close()


class ArmServer:
    """The loopback ARM. ``start()``/``stop()`` or ``with serving(estate) as server``."""

    def __init__(
        self,
        estate: Estate,
        latency: float = 0.05,
        bucket: TokenBucket | None = None,
        faults: Faults | None = None,
        graph_quota: GraphQuota | None = None,
        max_seconds: float = 900.0,
        max_requests: int | None = None,
        hostnames: tuple[str, ...] = (),
    ) -> None:
        import trustme

        self.estate = estate
        self.latency = latency
        self.bucket = bucket
        self.graph_quota = graph_quota
        self.faults = faults or Faults()
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.throttled = 0  # 429s from the read bucket
        self.graph_throttled = 0  # 429s from the Resource Graph quota
        self.token_requests: list[dict[str, str]] = []  # what each token request asked for
        self.authorization: Counter[str] = Counter()  # ARM requests by "issued" / "other" / "none"
        self.hosts: Counter[str] = Counter()  # every request (ARM and token) by its Host header
        self._issued: set[str] = set()
        self.tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
        self.client_id = "0b9e6b8a-4d5f-4a8c-9a55-5d2c3f0e1a7b"
        self.client_secret = secrets.token_urlsafe(24)
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._dir = tempfile.mkdtemp(prefix="nsp-drift-arm-")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", *hostnames)  # more names: reached through a proxy
        self.ca_path = str(Path(self._dir) / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def _reply(
                self, status: int, body: bytes, headers: dict[str, str] | None = None, arm: bool = True
            ) -> None:
                self.send_response(status)
                for key, value in {"Content-Type": "application/json; charset=utf-8", **(headers or {})}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if arm:  # token answers are not ARM's
                    with outer._lock:
                        outer.statuses[status] += 1

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else b""
                outer.serve(self, payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = _Server(context, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="arm-server", daemon=True)
        self._deadline: threading.Timer | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _bucket_headers(self, path: str) -> tuple[bool, dict[str, str]]:
        """Take a read token; (allowed, headers to send with the answer)."""
        assert self.bucket is not None
        match = _GUID.search(path)
        key = match.group(1).lower() if match else "tenant"
        allowed, remaining, retry = self.bucket.take(key)
        headers = {READS_HEADER if match else TENANT_READS_HEADER: str(remaining)}
        if not allowed:
            headers["Retry-After"] = str(max(1, math.ceil(retry)))
        return allowed, headers

    def environment(self) -> dict[str, str]:
        """The settings a custom-cloud user sets to point nsp-drift at this server: the cloud, its
        authority, a service principal and the CA to trust (SSL_CERT_FILE for the async ARM
        clients, REQUESTS_CA_BUNDLE for requests-based ones)."""
        return {
            "NSP_DRIFT_CLOUD": self.base_url,
            "NSP_DRIFT_AUTHORITY_HOST": self.base_url,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
            "SSL_CERT_FILE": self.ca_path,
            "REQUESTS_CA_BUNDLE": self.ca_path,
        }

    def _token(self, handler: Any, tenant: str, payload: bytes) -> None:
        """The client-credentials grant (Microsoft identity platform, v2.0 token endpoint)."""
        form = {k: v[0] for k, v in parse_qs(payload.decode("utf-8", "replace")).items()}
        with self._lock:
            self.token_requests.append({"tenant": tenant, **{k: v for k, v in form.items() if k != "client_secret"}})
        valid = (
            tenant == self.tenant_id
            and form.get("grant_type") == "client_credentials"
            and form.get("client_id") == self.client_id
            and secrets.compare_digest(form.get("client_secret", ""), self.client_secret)
        )
        if not valid:
            body = {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}
            handler._reply(401, json.dumps(body).encode(), arm=False)
            return
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._issued.add(token)
        # The success response's shape in "Microsoft identity platform and the OAuth 2.0 client
        # credentials flow" (learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
        answer = {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
        handler._reply(200, json.dumps(answer).encode(), arm=False)

    def serve(self, handler: Any, payload: bytes) -> None:
        path = handler.path
        method = handler.command
        with self._lock:
            self.hosts[str(handler.headers.get("Host") or "")] += 1
        token_path = _TOKEN.match(urlsplit(path).path)
        if method == "POST" and token_path:
            self._token(handler, token_path.group(1), payload)
            return
        scheme, _, token = str(handler.headers.get("Authorization") or "").partition(" ")
        with self._lock:
            issued = scheme.lower() == "bearer" and token in self._issued
            self.authorization["issued" if issued else "other" if scheme else "none"] += 1
        with self._lock:
            self.counts[f"{method} {path_template(path)}"] += 1
            fault = self.faults.draw(self._rng)
            if fault:
                self.faults.injected[fault] += 1
            over = self.max_requests is not None and sum(self.counts.values()) > self.max_requests
        if over:
            handler._reply(503, b'{"error":{"code":"ServerBusy","message":"request budget of the bench server spent"}}')
            self._stop_async()
            return
        if self.latency:
            time.sleep(self.latency)
        headers: dict[str, str] = {}
        is_graph = method == "POST" and urlsplit(path).path.lower() == _RESOURCE_GRAPH
        if self.bucket is not None and method == "GET":
            allowed, headers = self._bucket_headers(path)
            if not allowed:
                with self._lock:
                    self.throttled += 1
                handler._reply(429, b'{"error":{"code":"TooManyRequests","message":"read bucket empty"}}', headers)
                return
        if self.graph_quota is not None and is_graph:
            allowed, left, resets = self.graph_quota.take()
            headers = {"x-ms-user-quota-remaining": str(left), "x-ms-user-quota-resets-after": _hhmmss(resets)}
            if not allowed:
                with self._lock:
                    self.graph_throttled += 1
                body = (
                    b'{"error":{"code":"RateLimiting","message":"Please provide below info when asking for support"}}'
                )
                handler._reply(429, body, headers)
                return
        if fault == "throttle":
            handler._reply(
                429, b'{"error":{"code":"TooManyRequests","message":"injected"}}', {**headers, "Retry-After": "1"}
            )
            return
        if fault in {"server_error", "unavailable"}:
            status = 500 if fault == "server_error" else 503
            handler._reply(status, b'{"error":{"code":"InternalServerError","message":"injected"}}', headers)
            return
        if fault == "reset":
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            handler.connection.close()
            handler.close_connection = True
            return
        if fault == "slow":
            time.sleep(self.faults.slow_seconds)
        url = f"{self.base_url}{path}"
        reply = self.estate.answer(method, url, payload) if payload else self.estate.answer(method, url)
        body = reply.body
        if fault == "truncated" and reply.status == 200:
            body = body[: max(len(body) // 2, 1)]
        handler._reply(reply.status, body, {**dict(reply.headers), **headers})

    def start(self) -> ArmServer:
        self._thread.start()
        self._deadline = threading.Timer(self.max_seconds, self.stop)
        self._deadline.daemon = True
        self._deadline.start()
        return self

    def _stop_async(self) -> None:
        threading.Thread(target=self.stop, daemon=True).start()

    def stop(self) -> None:
        """Idempotent; safe from any thread but a request handler's (use ``_stop_async`` there)."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            if self._deadline is not None:
                self._deadline.cancel()
            if self._thread.is_alive():
                self._server.shutdown()
            self._server.server_close()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (by ``stop()`` or its own bounds); False on timeout."""
        return self._stopped.wait(timeout)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.statuses.clear()
            self.authorization.clear()
            self.hosts.clear()
            self.throttled = self.graph_throttled = 0


@contextmanager
def serving(estate: Estate, **kwargs: Any) -> Iterator[ArmServer]:
    server = ArmServer(estate, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


# The loopback ARM authenticates nobody: the same static credential as the offline estate.


class DeliveryReceiver:
    """A loopback endpoint for the app's HTTP deliveries (the ``webhook`` destination, plain http to
    127.0.0.1, which the destinations allow for loopback only): answers 204 to every POST and counts
    them, with each CloudEvent's type and its transition's rule (``data.rule``). ``fail_first``:
    answer 503 to that many requests first (the sender's retries are then counted too)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests = 0
        self.events: Counter[str] = Counter()  # CloudEvent type
        self.rules: Counter[tuple[str, str]] = Counter()  # (transition kind, rule id)
        self.resources: dict[tuple[str, str], set[str]] = {}  # (kind, rule) -> resource ids (lower case)
        self.fail_first = fail_first
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else b""
                status = outer.record(payload)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="delivery-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/nsp-drift"

    def record(self, payload: bytes) -> int:
        with self._lock:
            self.requests += 1
            if self.fail_first > 0:
                self.fail_first -= 1
                return 503
        try:
            event = json.loads(payload or b"{}")
        except ValueError:
            event = {}
        data = event.get("data") if isinstance(event, dict) else None
        items = data.get("transitions") if isinstance(data, dict) and "transitions" in data else [data]
        with self._lock:
            self.events[str(event.get("type", "")) if isinstance(event, dict) else ""] += 1
            for item in items or []:
                if isinstance(item, dict):
                    key = (str(item.get("transition", "")), str(item.get("rule", "")))
                    self.rules[key] += 1
                    self.resources.setdefault(key, set()).add(str(item.get("resource", "")).lower())
        return 204

    def start(self) -> DeliveryReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.events.clear()
            self.rules.clear()
            self.resources.clear()


@contextmanager
def receiving(fail_first: int = 0) -> Iterator[DeliveryReceiver]:
    receiver = DeliveryReceiver(fail_first).start()
    try:
        yield receiver
    finally:
        receiver.stop()
