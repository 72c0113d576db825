"""The evaluation queue: one message per coalescing window, visible when the window closes.

Message body (JSON, base64-encoded on the wire because the Functions queue trigger decodes
base64 by default)::

    {"target": {"kind": "account", "resource_id": "/subscriptions/..."}, "not_before": 1732521600.0}

The message is sent with a visibility delay equal to the window, so the queue itself is the
timer: no polling, and the trigger fires once the window's events have been merged.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64EncodePolicy

from shared.changes import Target, TargetKind
from shared.settings import QUEUE_NAME
from shared.state.base import StoreUnavailable

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_MAX_DELAY = 7 * 24 * 3600  # the service rejects a visibility timeout beyond seven days
_UNAVAILABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def encode_message(target: Target, not_before: float) -> str:
    return json.dumps(
        {"target": {"kind": target.kind.value, "resource_id": target.resource_id}, "not_before": not_before},
        separators=(",", ":"),
    )


def decode_message(text: str) -> tuple[Target, float]:
    """The target and the epoch time its window closed; ValueError naming the bad field."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"message: not JSON ({exc})") from None
    except RecursionError:
        # json's decoder recurses per nesting level: a hostile body must not crash the handler.
        raise ValueError(f"message: nested too deeply to decode ({len(text)} characters)") from None
    if not isinstance(document, dict):
        raise ValueError("message: expected a JSON object")
    return _target(document.get("target")), _not_before(document.get("not_before"))


def _target(value: object) -> Target:
    if not isinstance(value, Mapping):
        raise ValueError("target: expected an object with kind and resource_id")
    kind, resource_id = value.get("kind"), value.get("resource_id")
    try:
        target_kind = TargetKind(kind if isinstance(kind, str) else "")
    except ValueError:
        allowed = ", ".join(k.value for k in TargetKind)
        raise ValueError(f"target.kind: {kind!r} is not one of {allowed}") from None
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
    def __init__(
        self,
        service: QueueServiceClient,
        queue_name: str = QUEUE_NAME,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue_name = queue_name
        self._service = service
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
        client = QueueServiceClient.from_connection_string(connection_string, **_client_options(client_kwargs))
        return cls(client, queue_name, clock=clock)

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
        client = QueueServiceClient(service_uri, credential=credential, **_client_options(client_kwargs))
        return cls(client, queue_name, clock=clock)

    def _queue(self) -> QueueClient:
        """The queue client, creating the queue on first use (not at import or construction)."""
        with self._lock:
            if self._client is None:
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

    def close(self) -> None:
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
