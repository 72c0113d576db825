"""Generic webhook: CloudEvents 1.0 (structured mode), signed per the Standard Webhooks spec.

``webhook-id`` is the delivery's idempotency key, so a receiver that keeps the ids it has seen
drops a re-send (the dispatcher is at-least-once across a crash between send and mark-done).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shared.notify import http
from shared.notify.base import Delivery, Outcome, TaskLookup

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def _key(secret: str) -> bytes:
    # Standard Webhooks: "whsec_" + base64 of the key bytes; otherwise the text itself.
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def verify_signature(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = 300, now: float | None = None
) -> bool:
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, timestamp = lowered["webhook-id"], int(lowered["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    offered = [s.split(",", 1)[1] for s in lowered.get("webhook-signature", "").split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def cloud_event(event_type: str, event_id: str, subject: str, time_iso: str, data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "nsp-drift",
        "type": event_type,
        "subject": subject,
        "time": time_iso,
        "datacontenttype": "application/json",
        "data": data,
    }


class WebhookSender:
    def __init__(
        self,
        name: str,
        url: str,
        secret: str,
        retry: http.RetrySettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._url = url
        self._secret = secret
        self._retry = retry
        self._clock = clock

    def _post(self, msg_id: str, event: Mapping[str, Any]) -> Outcome:
        body = json.dumps(event, separators=(",", ":")).encode()
        timestamp = int(self._clock())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, msg_id, timestamp, body),
        }
        result = http.request(
            "POST",
            self._url,
            body,
            headers,
            content_type=CONTENT_TYPE,
            retry=self._retry,
            secrets=(self._url, self._secret),
        )
        return Outcome(
            ok=result.ok,
            status=result.status,
            retryable=result.retryable,
            error=result.error,
            retry_after=result.retry_after,
        )

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome:
        t = delivery.transition
        event = cloud_event(
            f"com.nspdrift.{t.get('transition', 'transition')}",
            delivery.idempotency_key,
            str(t.get("resource", "")),
            str(t.get("when") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))),
            t,
        )
        return self._post(delivery.idempotency_key, event)

    def send_digest(self, deliveries: Sequence[Delivery]) -> Outcome:
        digest_id = hashlib.sha256("|".join(sorted(d.idempotency_key for d in deliveries)).encode()).hexdigest()[:32]
        now_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
        event = cloud_event("com.nspdrift.digest", digest_id, "nsp-drift", now_iso, [d.transition for d in deliveries])
        return self._post(digest_id, event)
