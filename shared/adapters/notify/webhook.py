"""Generic webhook: CloudEvents 1.0 (structured mode), signed per the Standard Webhooks spec.

Event types: ``com.nspdrift.finding.<opened|changed|resolved>`` for the rule catalogue,
``com.nspdrift.perimeter.<kind>`` for perimeter-level changes, ``com.nspdrift.operator.<kind>``
for operator alerts (an evaluation that kept failing), ``com.nspdrift.digest`` for a batch.

``webhook-id`` and the event ``id`` are the delivery's idempotency key, so a receiver that keeps
the ids it has seen drops a re-send (the dispatcher is at-least-once across a crash between the
send and the mark-done). Signature: ``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))
where a ``whsec_`` secret is base64-decoded to get the key, any other secret is used as UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.adapters.notify import http
from shared.core.changes import PSEUDO_RULES_BY_ID
from shared.core.notify import limits
from shared.core.notify.base import Delivery, Outcome, TaskLookup

CONTENT_TYPE = "application/cloudevents+json"
SOURCE = "nsp-drift"
DIGEST_TYPE = "com.nspdrift.digest"


class SecretFormatError(ValueError):
    """A ``whsec_`` secret whose remainder is not base64 (the message never contains the secret)."""


def signing_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise SecretFormatError("a whsec_ secret must be base64 after the prefix") from None
    return secret.encode("utf-8")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(signing_key(secret), signed, hashlib.sha256).digest()).decode()


def verify_signature(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = 300, now: float | None = None
) -> bool:
    """For receivers and tests: the signature matches and the timestamp is within ``tolerance``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id, timestamp = lowered["webhook-id"], int(lowered["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False  # a replay of an old, captured request
    expected = sign(secret, msg_id, timestamp, body).removeprefix("v1,")
    # The header may carry several space-separated signatures (key rotation); any v1 match will do.
    offered = [s.removeprefix("v1,") for s in lowered.get("webhook-signature", "").split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def event_type(transition: Mapping[str, Any]) -> str:
    rule = str(transition.get("rule", ""))
    kind = str(transition.get("transition", "changed"))
    pseudo = PSEUDO_RULES_BY_ID.get(rule)
    category = pseudo.category if pseudo is not None else "finding"
    return f"com.nspdrift.{category}.{kind}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cloud_event(event_type: str, event_id: str, subject: str, time_iso: str, data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": event_type,
        "subject": subject,
        "time": time_iso,
        "datacontenttype": "application/json",
        "data": data,
    }


_ENVELOPE_ROOM = 4_000  # bytes for the CloudEvent attributes around ``data``


def build_event(transition: Mapping[str, Any], idempotency_key: str, now: float) -> dict[str, Any]:
    """At most limits.WEBHOOK_MAX_BYTES on the wire: ``data`` is the transition with at most 100
    event ids (``event_ids_omitted`` counts the rest), shortened further (``truncated``) if need be."""
    # ``time`` is when the change happened (the event's time); a sweep has none, so: now.
    return cloud_event(
        event_type(transition),
        idempotency_key,
        str(transition.get("resource", ""))[:1000],
        str(transition.get("when") or _iso(now)),
        limits.bounded_transition(transition, limits.WEBHOOK_MAX_BYTES - _ENVELOPE_ROOM),
    )


def digest_id(idempotency_keys: Sequence[str]) -> str:
    """The same batch gets the same id, so a re-sent digest is dropped like a re-sent event."""
    return hashlib.sha256("|".join(sorted(idempotency_keys)).encode()).hexdigest()[:32]


def build_digest_event(destination: str, transitions: Sequence[Mapping[str, Any]], now: float) -> dict[str, Any]:
    """Every transition of the batch, each shortened to its share of limits.WEBHOOK_MAX_BYTES."""
    keys = [str(t.get("idempotency_key", "")) for t in transitions]
    share = (limits.WEBHOOK_MAX_BYTES - _ENVELOPE_ROOM) // max(len(transitions), 1) - 2  # a comma between
    data = {
        "destination": destination,
        "count": len(transitions),
        "transitions": [limits.bounded_transition(t, share) for t in transitions],
    }
    return cloud_event(DIGEST_TYPE, digest_id(keys), destination, _iso(now), data)


class WebhookSender:
    def __init__(
        self,
        name: str,
        url: str,
        secret: str,
        retry: http.RetrySettings | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
    ) -> None:
        signing_key(secret)  # refuse a malformed whsec_ secret now, not at the first send
        self.name = name
        self._url = url
        self._secret = secret
        self._retry = retry
        self._clock = clock
        self._timeout = timeout

    def post_event(self, msg_id: str, event: Mapping[str, Any]) -> Outcome:
        body = http.encode_json(event)
        # Signed at send time: a retry inside http.request re-sends the same bytes and timestamp,
        # which stays within a receiver's tolerance (the retry layer's total cap is well under 5 min).
        timestamp = int(self._clock())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret, msg_id, timestamp, body),
        }
        result = http.post_json(
            self._url,
            body,
            headers,
            timeout=self._timeout,
            content_type=CONTENT_TYPE,
            retry=self._retry,
            secrets=(self._url, self._secret),
        )
        return result.outcome()

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome:
        event = build_event(delivery.transition, delivery.idempotency_key, self._clock())
        return self.post_event(delivery.idempotency_key, event)

    def send_digest(self, deliveries: Sequence[Delivery]) -> Outcome:
        transitions = [{**d.transition, "idempotency_key": d.idempotency_key} for d in deliveries]
        event = build_digest_event(self.name, transitions, self._clock())
        return self.post_event(str(event["id"]), event)
