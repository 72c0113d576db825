"""The one HTTP client of the senders, with the one retry layer for them (tenacity).

Webhooks and ticket APIs have no retry of their own, so this is it: exponential backoff with
jitter, honouring ``Retry-After`` on 429/503, retrying connection errors, 408, 429 and 5xx;
other 4xx are final and reported with their status. Errors carry redacted text only.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import tenacity

from shared.notify.redact import redact

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class HttpResult:
    status: int | None  # None: no response (connection error, timeout)
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str = ""  # redacted

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRY_STATUS

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)


@dataclass
class RetrySettings:
    attempts: int = 4
    max_total_seconds: float = 60.0
    initial: float = 1.0
    max_wait: float = 20.0
    sleep: Callable[[float], None] = time.sleep


class _Retryable(Exception):
    def __init__(self, result: HttpResult) -> None:
        super().__init__(result.error or f"HTTP {result.status}")
        self.result = result


def _once(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    timeout: float,
    secrets: tuple[str, ...],
    context: ssl.SSLContext | None,
) -> HttpResult:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers))
        response = conn.getresponse()
        data = response.read()
        result_headers = {k.lower(): v for k, v in response.getheaders()}
        error = ""
        if not 200 <= response.status < 300:
            snippet = data[:300].decode("utf-8", errors="replace")
            error = redact(f"HTTP {response.status} from {parts.hostname}: {snippet}", secrets)
        return HttpResult(response.status, data, result_headers, error)
    except (OSError, TimeoutError, http.client.HTTPException) as exc:
        return HttpResult(None, error=redact(f"{type(exc).__name__} talking to {parts.hostname}: {exc}", secrets))
    finally:
        conn.close()


def request(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    *,
    content_type: str = "application/json",
    timeout: float = 15.0,
    retry: RetrySettings | None = None,
    secrets: tuple[str, ...] = (),
    context: ssl.SSLContext | None = None,
) -> HttpResult:
    """Send with retries; returns the last result (never raises for HTTP or network errors)."""
    retry = retry or RetrySettings()
    payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    all_headers = {"Content-Type": content_type, "User-Agent": "nsp-drift/0.1", **(headers or {})}

    def wait(state: tenacity.RetryCallState) -> float:
        base = tenacity.wait_exponential_jitter(multiplier=retry.initial, max=retry.max_wait)(state)
        exc = state.outcome.exception() if state.outcome else None
        hint = exc.result.retry_after if isinstance(exc, _Retryable) else None
        return max(base, min(hint, retry.max_total_seconds)) if hint is not None else base

    @tenacity.retry(
        retry=tenacity.retry_if_exception_type(_Retryable),
        wait=wait,
        stop=tenacity.stop_after_attempt(retry.attempts) | tenacity.stop_after_delay(retry.max_total_seconds),
        sleep=retry.sleep,
        reraise=True,
    )
    def attempt() -> HttpResult:
        result = _once(method, url, payload, all_headers, timeout, secrets, context)
        if not result.ok and result.retryable:
            raise _Retryable(result)
        return result

    try:
        return attempt()
    except _Retryable as exc:
        return exc.result
