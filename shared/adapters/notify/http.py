"""The one HTTP client of the senders, with their one in-process retry layer (tenacity).

Stdlib ``http.client`` on purpose: no redirects are followed (a redirect must never carry a PAT to
another host), nothing retries underneath us (urllib3 would, and retries would multiply), and no
new dependency ships in the function app.

Policy: exponential backoff with jitter for connection errors, timeouts, 408, 429 and 5xx, at most
``attempts`` tries within ``max_total_seconds``. ``Retry-After`` (seconds or HTTP-date) on 429/503
is a floor for the next sleep; when it is longer than ``max_retry_after`` (or would break the total
cap) we stop at once and hand the hint back, so the outbox reschedules the delivery instead of the
function sitting idle. Other 4xx are final. Nothing here raises for HTTP or network failures, and
error texts are redacted and on one line.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypedDict, Unpack
from urllib.parse import urlsplit

import tenacity
from tenacity.stop import stop_base

from shared.core.notify.base import Outcome, TaskRef
from shared.core.notify.redact import one_line, redact

USER_AGENT = "nsp-drift/0.1"
MAX_RESPONSE_BYTES = 1_048_576  # enough for any API answer we read; bounds memory on a hostile server
_HINTED = frozenset({429, 503})  # the statuses whose Retry-After we honour


def is_retryable_status(status: int | None) -> bool:
    return status is None or status in (408, 429) or status >= 500


@dataclass(frozen=True)
class HttpResult:
    status: int | None  # None: no response (connection error, timeout)
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-cased
    error: str = ""  # redacted, one line; empty on 2xx
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return not self.ok and is_retryable_status(self.status)

    @property
    def retry_after(self) -> float | None:
        if self.status not in _HINTED:
            return None
        return parse_retry_after(self.headers.get("retry-after"))

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def outcome(self, task: TaskRef | None = None) -> Outcome:
        return Outcome(
            ok=self.ok,
            status=self.status,
            retryable=self.retryable,
            error=self.error,
            retry_after=self.retry_after,
            task=task if self.ok else None,
        )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


@dataclass(frozen=True)
class RetrySettings:
    attempts: int = 4
    max_total_seconds: float = 30.0  # sleeps included; a function invocation has other work to do
    initial: float = 1.0  # first backoff; also the jitter's width
    max_wait: float = 10.0  # longest backoff sleep
    max_retry_after: float = 30.0  # a longer Retry-After is left to the outbox's schedule
    sleep: Callable[[float], None] = time.sleep


class _HintTooLong(stop_base):
    """Stop when the server asks for a longer wait than we are willing to spend in-process."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        outcome = retry_state.outcome
        asked = outcome.result().retry_after if outcome is not None and not outcome.failed else None
        return asked is not None and asked > self.limit


def encode_json(body: Any) -> bytes:
    """The wire form of every JSON body: compact UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class RequestOptions(TypedDict, total=False):
    """The keyword options of ``request`` and ``post_json`` (all optional)."""

    content_type: str  # of a body; default application/json
    timeout: float  # seconds per attempt; default 10
    retry: RetrySettings | None  # default RetrySettings()
    secrets: tuple[str, ...]  # values to mask in errors besides the registered ones (the URL, the token)
    context: ssl.SSLContext | None  # TLS settings; default the system's


@dataclass(frozen=True)
class _Call:
    """One request, prepared once and sent as is on every attempt."""

    method: str
    url: str
    body: bytes | None
    headers: Mapping[str, str]
    timeout: float
    secrets: tuple[str, ...]
    context: ssl.SSLContext | None


def _once(call: _Call) -> HttpResult:
    parts = urlsplit(call.url)
    host = parts.hostname or "?"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection | None = None
    try:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, parts.port, timeout=call.timeout, context=call.context)
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(host, parts.port, timeout=call.timeout)
        else:
            return HttpResult(None, error=f"unsupported URL scheme {parts.scheme!r}")
        conn.request(call.method, target, body=call.body, headers=dict(call.headers))
        response = conn.getresponse()
        data = response.read(MAX_RESPONSE_BYTES)
        result_headers = {k.lower(): v for k, v in response.getheaders()}
        error = ""
        if not 200 <= response.status < 300:
            snippet = data[:300].decode("utf-8", errors="replace")
            error = one_line(f"HTTP {response.status} from {host}: {redact(snippet, call.secrets)}")
        return HttpResult(response.status, data, result_headers, error)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # ValueError: a malformed URL or header value; never echo the URL (it may hold a signature).
        return HttpResult(None, error=one_line(redact(f"{type(exc).__name__} talking to {host}: {exc}", call.secrets)))
    finally:
        if conn is not None:
            conn.close()


def request(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    **options: Unpack[RequestOptions],
) -> HttpResult:
    """Send with retries; return the last result. ``body``: bytes as is, anything else as JSON.

    ``options``: see ``RequestOptions``."""
    policy = options.get("retry") or RetrySettings()
    payload = body if isinstance(body, bytes) or body is None else encode_json(body)
    all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
    if payload is not None:
        all_headers.setdefault("Content-Type", options.get("content_type", "application/json"))
    call = _Call(
        method,
        url,
        payload,
        all_headers,
        options.get("timeout", 10.0),
        options.get("secrets", ()),
        options.get("context"),
    )
    tries = 0

    def hint(state: tenacity.RetryCallState) -> float | None:
        return state.outcome.result().retry_after if state.outcome is not None else None

    backoff = tenacity.wait_exponential_jitter(multiplier=policy.initial, max=policy.max_wait, jitter=policy.initial)

    def wait(state: tenacity.RetryCallState) -> float:
        asked = hint(state)
        base = backoff(state)
        return base if asked is None else max(base, asked)

    def attempt() -> HttpResult:
        nonlocal tries
        tries += 1
        return replace(_once(call), attempts=tries)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda r: isinstance(r, HttpResult) and r.retryable),
        wait=wait,
        # stop_before_delay sees the upcoming sleep (tenacity computes wait first), so a sleep
        # that would end past the cap is never started.
        stop=tenacity.stop_any(
            tenacity.stop_after_attempt(policy.attempts),
            tenacity.stop_before_delay(policy.max_total_seconds),
            _HintTooLong(policy.max_retry_after),
        ),
        sleep=policy.sleep,
        retry_error_callback=lambda state: state.outcome.result() if state.outcome is not None else None,
    )
    result = retrying(attempt)
    assert isinstance(result, HttpResult)  # attempt() never raises, so there is always a result
    return result


def post_json(
    url: str, body: Any, headers: Mapping[str, str] | None = None, **options: Unpack[RequestOptions]
) -> HttpResult:
    return request("POST", url, body, headers, **options)
