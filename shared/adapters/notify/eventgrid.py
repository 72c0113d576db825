"""Event Grid destination: each transition published as the webhook's CloudEvent, through
``azure.eventgrid.EventGridPublisherClient``, to a custom topic or a namespace topic.

The event is exactly what ``shared.adapters.notify.webhook.build_event`` builds (type
``com.nspdrift.finding.<kind>`` and so on, ``id`` = the delivery's idempotency key, so a subscriber
that keeps the ids it has seen drops a re-send). Event Grid routes it on to Logic Apps, Service
Bus, Event Hubs, functions..., with its own retries and dead-lettering.

- Custom topic (no ``topic``): ``POST {endpoint}/api/events?api-version=2018-01-01``; an access key
  travels as ``aeg-sas-key``.
- Namespace topic (``topic``): ``POST {endpoint}/topics/{topic}:publish?api-version=2024-06-01``;
  an access key travels as ``Authorization: SharedAccessKey <key>``.
- Without a key: the app's identity (managed identity in Azure) gets a Microsoft Entra token for
  ``https://eventgrid.azure.net/.default``; it needs the "EventGrid Data Sender" role on the topic.

Both send ``application/cloudevents-batch+json``: a JSON array of events, at most
``limits.EVENTGRID_MAX_BATCH_BYTES`` on the wire (Event Grid refuses a request over 1 MB), so a
longer list (a quiet-mode digest) goes out in several requests and one event that cannot fit alone
is a clear, permanent error.

One retry layer: azure-core's ``RetryPolicy`` inside the SDK client, configured per call from the
senders' ``RetrySettings`` (attempts, backoff, total time, POST retried on connection errors, 408,
429 and 5xx). A ``Retry-After`` longer than ``max_retry_after`` stops the call at once and hands the
hint to the outbox, which reschedules the delivery, instead of the function sleeping.

``azure.eventgrid`` is imported on the first send only (cold start: nothing at import).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared.adapters.notify.http import RetrySettings, is_retryable_status, parse_retry_after
from shared.adapters.notify.webhook import build_event
from shared.core.notify import limits
from shared.core.notify.base import Delivery, Outcome, TaskLookup
from shared.core.notify.redact import one_line, redact

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
CUSTOM_TOPIC_PATH = "/api/events"
# What the "EventGrid Data Sender" role grants and the SDK asks a token for (every Azure cloud).
SCOPE = "https://eventgrid.azure.net/.default"
_HINTED = frozenset({429, 503})
_ENVELOPE_ROOM = 4_000  # bytes for the CloudEvent attributes around ``data`` (as the webhook's)

# The per-call pipeline options we pass. The SDK's custom-topic path also hands a call's keyword
# arguments to its CloudEvent model, which logs "<name> is not a known attribute ... and will be
# ignored" for each: those lines (and only those) are dropped, see _QuietOptions.
_CALL_OPTIONS = frozenset(
    {
        "retry_total",
        "retry_connect",
        "retry_read",
        "retry_status",
        "retry_backoff_factor",
        "retry_backoff_max",
        "retry_on_methods",
        "timeout",
        "connection_timeout",
        "read_timeout",
        "raw_response_hook",
    }
)
_SDK_MODEL_LOGGER = "azure.eventgrid._legacy._generated._serialization"


class EventTooLargeError(ValueError):
    """One event is larger on the wire than a whole Event Grid request may be."""


class _WaitTooLong(Exception):
    """The service asked for a longer wait than we spend in-process; the outbox takes over. Not an
    AzureError on purpose: azure-core's retry policy lets it through instead of retrying."""

    def __init__(self, status: int, retry_after: float) -> None:
        super().__init__(f"HTTP {status}, Retry-After {retry_after:.0f} s")
        self.status = status
        self.retry_after = retry_after


class _QuietOptions(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not ("is not a known attribute" in str(record.msg) and args and str(args[0]) in _CALL_OPTIONS)


_quiet_installed = False


def _install_quiet_options() -> None:
    global _quiet_installed
    if not _quiet_installed:
        logging.getLogger(_SDK_MODEL_LOGGER).addFilter(_QuietOptions())
        _quiet_installed = True


def wire_bytes(event: Mapping[str, Any]) -> int:
    """An event's size in the SDK's request body (``json.dumps`` defaults: ASCII-escaped, spaced)."""
    return len(json.dumps(event).encode("utf-8"))


def batches(
    events: Sequence[Mapping[str, Any]], max_bytes: int = limits.EVENTGRID_MAX_BATCH_BYTES
) -> list[list[Mapping[str, Any]]]:
    """``events`` in order, cut into JSON arrays of at most ``max_bytes`` each.

    Raises EventTooLargeError (naming the event and its size) for an event that cannot fit even
    alone; nothing is sent then."""
    out: list[list[Mapping[str, Any]]] = []
    current: list[Mapping[str, Any]] = []
    size = 2  # "[" and "]"
    for event in events:
        own = wire_bytes(event)
        if own + 2 > max_bytes:
            raise EventTooLargeError(
                f"event {str(event.get('id', '?'))[:80]!r} ({event.get('type', '?')}) is {own:,} bytes on the wire; "
                f"one Event Grid request carries at most {max_bytes:,} (limits.EVENTGRID_MAX_BATCH_BYTES)"
            )
        extra = own + (2 if current else 0)  # ", " between events
        if current and size + extra > max_bytes:
            out.append(current)
            current, size = [], 2
            extra = own
        current.append(event)
        size += extra
    if current:
        out.append(current)
    return out


def fit_event(transition: Mapping[str, Any], idempotency_key: str, now: float) -> dict[str, Any]:
    """The webhook's CloudEvent for ``transition``; when the SDK's wire form of it (ASCII-escaped,
    spaced) would not fit in one request, its ``data`` is shortened further the webhook's way
    (``limits.bounded_transition``: ``truncated``, identity kept) until it does."""
    event = build_event(transition, idempotency_key, now)
    cap = limits.EVENTGRID_MAX_BATCH_BYTES - 2
    for _ in range(4):
        size = wire_bytes(event)
        if size <= cap:
            break
        budget = int(limits.json_bytes(event["data"]) * (cap - _ENVELOPE_ROOM) / size)
        event = {**event, "data": limits.bounded_transition(transition, max(budget, 1))}
    return event


def topic_endpoint(endpoint: str, topic: str | None) -> str:
    """The URL the SDK client takes: a custom topic's ends in /api/events (the portal shows it
    so; a bare host gets it added), a namespace's is the bare host (the SDK adds the topic path)."""
    parts = urlsplit(endpoint.strip())
    path = parts.path.rstrip("/")
    if topic is None and not path.lower().endswith(CUSTOM_TOPIC_PATH):
        path += CUSTOM_TOPIC_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class EventGridSender:
    """One Event Grid topic. ``key``: an access key (None: ``credential``, a TokenCredential, or
    by default the app's identity from shared.wiring). The SDK client is built on the first send."""

    def __init__(  # noqa: PLR0913 - keyword-only options, each named by its callers
        self,
        name: str,
        endpoint: str,
        *,
        topic: str | None = None,
        key: str | None = None,
        credential: Any = None,
        retry: RetrySettings | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.topic = topic
        self.endpoint = topic_endpoint(endpoint, topic)
        self._key = key
        self._credential = credential
        self._retry = retry or RetrySettings()
        self._clock = clock
        self._timeout = timeout
        self._client: Any = None
        self._client_lock = threading.Lock()  # invocations may run in threads: one client, built once

    @property
    def auth(self) -> str:
        """For messages and docs: how the sender authenticates (never the key)."""
        return "access key" if self._key else "Microsoft Entra token"

    def _sdk_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> Any:
        from azure.eventgrid import EventGridPublisherClient

        credential: Any
        if self._key:
            from azure.core.credentials import AzureKeyCredential

            credential = AzureKeyCredential(self._key)
        elif self._credential is not None:
            credential = self._credential
        else:
            from shared.adapters.identity import credential_sync

            credential = credential_sync()
        _install_quiet_options()
        return EventGridPublisherClient(self.endpoint, credential, namespace_topic=self.topic)

    def _call_options(self) -> dict[str, Any]:
        policy = self._retry
        retries = max(policy.attempts - 1, 0)
        cap = policy.max_retry_after

        def stop_on_long_hint(pipeline_response: Any) -> None:
            response = pipeline_response.http_response
            if response.status_code in _HINTED:
                hint = parse_retry_after(response.headers.get("Retry-After"))
                if hint is not None and hint > cap:
                    raise _WaitTooLong(response.status_code, hint)

        return {
            "retry_total": retries,
            "retry_connect": retries,
            "retry_read": retries,
            "retry_status": retries,
            "retry_backoff_factor": policy.initial,
            "retry_backoff_max": policy.max_wait,
            # Publishing is safe to repeat (the event id is the idempotency key): also on a lost
            # connection, which azure-core retries for POST only when asked.
            "retry_on_methods": frozenset({"POST"}),
            "timeout": policy.max_total_seconds,
            "connection_timeout": self._timeout,
            "read_timeout": self._timeout,
            "raw_response_hook": stop_on_long_hint,
        }

    def _error(self, text: str) -> str:
        secrets = (self._key,) if self._key else ()
        return one_line(redact(f"Event Grid topic {self.name}: {text}", secrets))

    def _send_batch(self, events: list[Mapping[str, Any]]) -> Outcome:
        from azure.core.exceptions import AzureError, HttpResponseError

        try:
            self._sdk_client().send(list(events), content_type=CONTENT_TYPE, **self._call_options())
        except _WaitTooLong as exc:
            return Outcome(
                ok=False, status=exc.status, retryable=True, error=self._error(str(exc)), retry_after=exc.retry_after
            )
        except HttpResponseError as exc:
            status = exc.status_code
            response: Any = exc.response
            hint = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
            return Outcome(
                ok=False,
                status=status,
                retryable=is_retryable_status(status),
                error=self._error(
                    f"HTTP {status}: {exc.message}" if status else f"{type(exc).__name__}: {exc.message}"
                ),
                retry_after=hint if status in _HINTED else None,
            )
        except AzureError as exc:  # connection, timeout, credential: worth another try later
            return Outcome(ok=False, retryable=True, error=self._error(f"{type(exc).__name__}: {exc.message}"))
        except ValueError as exc:  # the SDK refusing its input (e.g. an unusable endpoint)
            return Outcome(ok=False, retryable=False, error=self._error(f"{type(exc).__name__}: {exc}"))
        return Outcome(ok=True, status=200)

    def publish(self, events: Sequence[Mapping[str, Any]]) -> Outcome:
        """Every event, in requests of at most 1 MB, in order; stops at the first failure."""
        try:
            groups = batches(events)
        except EventTooLargeError as exc:
            return Outcome(ok=False, retryable=False, error=self._error(str(exc)))
        for group in groups:
            outcome = self._send_batch(group)
            if not outcome.ok:
                return outcome
        if len(groups) > 1:
            log.info("eventgrid %s: %d events published in %d requests", self.name, len(events), len(groups))
        return Outcome(ok=True, status=200)

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome:
        return self.publish([fit_event(delivery.transition, delivery.idempotency_key, self._clock())])

    def send_digest(self, deliveries: Sequence[Delivery]) -> Outcome:
        """Quiet mode: the held transitions, each its own CloudEvent (subscribers filter by type),
        batched. A failure part-way leaves them all to be retried; the events already accepted
        then arrive again with the same ids (at-least-once, as for every destination)."""
        now = self._clock()
        return self.publish([fit_event(d.transition, d.idempotency_key, now) for d in deliveries])
