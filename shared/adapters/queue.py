"""The evaluation queue: one message per coalescing window, visible when the window closes.

Message body (JSON, base64-encoded on the wire because the Functions queue trigger decodes
base64 by default)::

    {"target": {"kind": "account", "resource_id": "/subscriptions/..."}, "not_before": 1732521600.0}

The message is sent with a visibility delay equal to the window, so the queue itself is the
timer: no polling, and the trigger fires once the window's events have been merged.

Work messages (``shared.core.work``: a batch of accounts, one page of a sweep) share the queue and
its trigger; they carry ``work`` instead of ``target`` (a reader that predates them refuses them
as malformed rather than misreading them)::

    {"work": {"kind": "accounts", "accounts": ["/subscriptions/..."], "cause": "perimeter",
              "provenance": {...}, "vault_members": [["/subscriptions/.../networksecurityperimeters/p", [...]]],
              "attempts": 0, "origin": "perimeter:/subscriptions/..."}, "not_before": 1732521600.0}
    {"work": {"kind": "sweep", "subscription": "...", "page": "", "full": true, "sweep_round": 3}, "not_before": ...}

``decode_any`` reads both kinds; ``decode_message`` still reads window messages only.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.core.changes import TARGET_KINDS, Provenance, Target, TargetKind
from shared.core.state.base import StoreUnavailable
from shared.core.work import QUEUE_NAME, Work, WorkKind

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.queue import QueueClient, QueueServiceClient

_Kind = TypeVar("_Kind", WorkKind, TargetKind)

_MAX_DELAY = 7 * 24 * 3600  # the service rejects a visibility timeout beyond seven days
_UNAVAILABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def encode_message(target: Target, not_before: float) -> str:
    return json.dumps(
        {"target": {"kind": target.kind.value, "resource_id": target.resource_id}, "not_before": not_before},
        separators=(",", ":"),
    )


def encode_work(work: Work, not_before: float) -> str:
    from shared.adapters.state.codec import provenance_to_dict

    body: dict[str, Any] = {"kind": work.kind.value}
    if work.kind is WorkKind.ACCOUNTS:
        body.update(
            accounts=list(work.accounts),
            cause=work.cause.value,
            provenance=provenance_to_dict(work.provenance),
            vault_members=[[p, list(m)] for p, m in work.vault_members],
            attempts=work.attempts,
        )
    else:
        body.update(subscription=work.subscription, page=work.page, full=work.full, sweep_round=work.sweep_round)
    body["origin"] = work.origin
    if work.since:
        body["since"] = work.since
    return json.dumps({"work": body, "not_before": not_before}, separators=(",", ":"))


def decode_any(text: str) -> tuple[Target | Work, float]:
    """A window message's target or a work message's item, and its not-before time; ValueError
    naming the bad field."""
    document = _document(text)
    if "work" in document:
        return _work(document.get("work")), _not_before(document.get("not_before"))
    return _target(document.get("target")), _not_before(document.get("not_before"))


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{what}: expected a list of non-empty strings")
    return tuple(v.strip() for v in value)


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: expected a count, got {value!r}")
    return value


def _choice(value: Mapping[Any, Any], key: str, choices: type[_Kind]) -> _Kind:
    raw = value.get(key)
    try:
        return choices(raw if isinstance(raw, str) else "")
    except ValueError:
        raise ValueError(f"work.{key}: {raw!r} is not one of {', '.join(choices)}") from None


def _since(value: Mapping[Any, Any]) -> float:
    since = value.get("since", 0.0)
    if isinstance(since, bool) or not isinstance(since, int | float) or not math.isfinite(since) or since < 0:
        raise ValueError(f"work.since: expected epoch seconds, got {since!r}")
    return float(since)


def _sweep_work(value: Mapping[Any, Any], origin: str, since: float) -> Work:
    """One page of a sweep: the subscription listed and ARM's nextLink of the page."""
    subscription, page = value.get("subscription"), value.get("page", "")
    if not isinstance(subscription, str) or not subscription.strip():
        raise ValueError("work.subscription: expected a subscription id")
    if not isinstance(page, str):
        raise ValueError("work.page: expected a nextLink or an empty string")
    return Work(
        WorkKind.SWEEP,
        subscription=subscription.strip(),
        page=page,
        full=value.get("full", True) is not False,
        sweep_round=_count(value.get("sweep_round", 0), "work.sweep_round"),
        origin=origin,
        since=since,
    )


def _provenance(value: Mapping[Any, Any]) -> Provenance:
    from shared.adapters.state.codec import CodecError, provenance_from_dict

    raw_provenance = value.get("provenance")
    if not isinstance(raw_provenance, Mapping):
        raise ValueError("work.provenance: expected an object")
    try:
        return provenance_from_dict(raw_provenance, "work.provenance")
    except (CodecError, TypeError) as exc:
        raise ValueError(str(exc)) from None


def _vault_members(value: Mapping[Any, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``[[perimeter id, [vault ids]], ...]``, lower-cased."""
    raw_members = value.get("vault_members", [])
    if not isinstance(raw_members, list):
        raise ValueError("work.vault_members: expected a list of [perimeter id, [vault ids]]")
    members = []
    for item in raw_members:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError("work.vault_members: expected a list of [perimeter id, [vault ids]]")
        members.append((item[0].lower(), tuple(v.lower() for v in _strings(item[1], "work.vault_members[]"))))
    return tuple(members)


def _accounts_work(value: Mapping[Any, Any], origin: str, since: float) -> Work:
    """A batch of accounts: why (the cause and the events' provenance), with what the fan-out read."""
    accounts = _strings(value.get("accounts"), "work.accounts")
    if not accounts:
        raise ValueError("work.accounts: expected at least one account id")
    cause = _choice(value, "cause", TargetKind)
    provenance = _provenance(value)
    return Work(
        WorkKind.ACCOUNTS,
        accounts,
        cause,
        provenance,
        _vault_members(value),
        attempts=_count(value.get("attempts", 0), "work.attempts"),
        origin=origin,
        since=since,
    )


def _work(value: object) -> Work:
    if not isinstance(value, Mapping):
        raise ValueError("work: expected an object with a kind")
    kind = _choice(value, "kind", WorkKind)
    origin = value.get("origin", "")
    origin = origin if isinstance(origin, str) else ""
    since = _since(value)
    if kind is WorkKind.SWEEP:
        return _sweep_work(value, origin, since)
    return _accounts_work(value, origin, since)


def _document(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"message: not JSON ({exc})") from None
    except RecursionError:
        # json's decoder recurses per nesting level: a hostile body must not crash the handler.
        raise ValueError(f"message: nested too deeply to decode ({len(text)} characters)") from None
    if not isinstance(document, dict):
        raise ValueError("message: expected a JSON object")
    return document


def decode_message(text: str) -> tuple[Target, float]:
    """The target and the epoch time its window closed; ValueError naming the bad field."""
    document = _document(text)
    return _target(document.get("target")), _not_before(document.get("not_before"))


def _target(value: object) -> Target:
    if not isinstance(value, Mapping):
        raise ValueError("target: expected an object with kind and resource_id")
    kind, resource_id = value.get("kind"), value.get("resource_id")
    if not isinstance(kind, str) or kind not in TARGET_KINDS:
        allowed = ", ".join(k.value for k in TARGET_KINDS)
        raise ValueError(f"target.kind: {kind!r} is not one of {allowed}")
    target_kind = TargetKind(kind)
    if not isinstance(resource_id, str) or not resource_id.strip():
        raise ValueError("target.resource_id: expected a non-empty string")
    return Target(target_kind, resource_id.strip())


def _not_before(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"not_before: expected epoch seconds, got {value!r}")
    return float(value)


@contextmanager
def _queue_errors(what: str) -> Iterator[None]:
    """The queue lives in the same storage account as the state: unreachable is StoreUnavailable,
    so the caller fails and Event Grid redelivers. Messages never include the endpoint or key."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StoreUnavailable(f"{what}: queue service unreachable ({type(exc).__name__})") from exc
    except HttpResponseError as exc:
        if exc.status_code in _UNAVAILABLE_STATUS:
            raise StoreUnavailable(f"{what}: queue service returned HTTP {exc.status_code}") from exc
        raise


class EvaluationQueue:
    """The evaluation queue. ``service``: the SDK's service client, or a function that builds it
    on the first send (the classmethods: azure-storage-queue is imported then, not by an
    invocation that only reads a message it was handed)."""

    def __init__(
        self,
        service: QueueServiceClient | Callable[[], QueueServiceClient],
        queue_name: str = QUEUE_NAME,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue_name = queue_name
        self._service: QueueServiceClient | None = None if callable(service) else service
        self._make_service = service if callable(service) else None
        self._clock = clock
        self._client: QueueClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(
        cls,
        connection_string: str,
        queue_name: str = QUEUE_NAME,
        *,
        clock: Callable[[], float] = time.time,
        **client_kwargs: Any,
    ) -> EvaluationQueue:
        """``client_kwargs`` go to the SDK client (e.g. ``retry_total``)."""

        def make() -> QueueServiceClient:
            from azure.storage.queue import QueueServiceClient

            return QueueServiceClient.from_connection_string(connection_string, **_client_options(client_kwargs))

        return cls(make, queue_name, clock=clock)

    @classmethod
    def from_service_uri(
        cls,
        service_uri: str,
        credential: TokenCredential,
        queue_name: str = QUEUE_NAME,
        *,
        clock: Callable[[], float] = time.time,
        **client_kwargs: Any,
    ) -> EvaluationQueue:
        """Identity-based connection (``AzureWebJobsStorage__queueServiceUri``)."""

        def make() -> QueueServiceClient:
            from azure.storage.queue import QueueServiceClient

            return QueueServiceClient(service_uri, credential=credential, **_client_options(client_kwargs))

        return cls(make, queue_name, clock=clock)

    def _queue(self) -> QueueClient:
        """The queue client, creating the queue on first use (not at import or construction)."""
        with self._lock:
            if self._client is None:
                from azure.storage.queue import TextBase64EncodePolicy

                if self._service is None and self._make_service is not None:
                    self._service = self._make_service()
                assert self._service is not None
                client = self._service.get_queue_client(self.queue_name, message_encode_policy=TextBase64EncodePolicy())
                with _queue_errors(f"create queue {self.queue_name}"), _ignore_exists():
                    client.create_queue()
                self._client = client
            return self._client

    def send(self, target: Target, window_seconds: float) -> None:
        """Enqueue one evaluation of ``target``, invisible until its window closes.

        The delay is rounded up: a message seen a fraction of a second early would be claimed
        before the last events of its window merged in."""
        delay = min(max(math.ceil(window_seconds), 0), _MAX_DELAY)
        body = encode_message(target, self._clock() + max(window_seconds, 0.0))
        with _queue_errors(f"send to {self.queue_name}"):
            self._queue().send_message(body, visibility_timeout=delay)

    def send_work(self, work: Work, delay_seconds: float) -> None:
        """Enqueue a work item (a batch of accounts, a sweep page), visible after ``delay_seconds``."""
        delay = min(max(math.ceil(delay_seconds), 0), _MAX_DELAY)
        body = encode_work(work, self._clock() + max(delay_seconds, 0.0))
        with _queue_errors(f"send to {self.queue_name}"):
            self._queue().send_message(body, visibility_timeout=delay)

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()


@contextmanager
def _ignore_exists() -> Iterator[None]:
    # Another instance created the queue first: that is the state we wanted.
    try:
        yield
    except ResourceExistsError:
        return


def _client_options(overrides: Mapping[str, Any]) -> dict[str, Any]:
    # A modest HTTP retry budget: Event Grid and the Functions runtime retry on top.
    return {"retry_total": 3, **overrides}
