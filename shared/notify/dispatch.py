"""The outbox and its dispatcher: every transition reaches each destination that wants it, once.

``OutboxSink`` is the pipeline's TransitionSink: it turns transitions into deliveries (one per
accepting destination) and stores them *before* the account state is written, with ids derived
from (destination, idempotency key) so a re-decided or re-evaluated transition maps to the same
row. ``Dispatcher`` sends what is due: it leases a delivery (conditional write) so two workers
never send it concurrently, sends it, then marks it done. A crash between send and mark-done
means the delivery is sent again after the lease: at-least-once, with the idempotency key
travelling as ``webhook-id`` (webhooks) or the task marker (work items, issues) so receivers
drop the repeat.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from shared.changes import Transition, transition_to_dict
from shared.notify.base import Delivery, DeliveryStatus, OutboxStore, Outcome, Sender
from shared.state.base import ConflictError

log = logging.getLogger(__name__)


class Route(Protocol):
    """What the outbox needs to know of a destination: its name and its routing."""

    @property
    def name(self) -> str: ...

    def accepts(self, transition: Mapping[str, Any]) -> bool: ...

    def is_digest(self, transition: Mapping[str, Any]) -> bool: ...


DigestSender = Callable[[Sequence[Delivery]], Outcome]


class OutboxSink:
    def __init__(self, store: OutboxStore, routes: Sequence[Route], clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.routes = routes
        self.clock = clock

    def emit(self, transitions: Sequence[Transition]) -> None:
        now = self.clock()
        deliveries = []
        for transition in transitions:
            payload = transition_to_dict(transition)
            for route in self.routes:
                if route.accepts(payload):
                    deliveries.append(
                        Delivery(
                            destination=route.name,
                            idempotency_key=transition.idempotency_key,
                            transition=payload,
                            created_at=now,
                            next_attempt_at=now,
                            digest=route.is_digest(payload),
                        )
                    )
        if deliveries:
            added = self.store.add_deliveries(deliveries)
            log.info("outbox: %d delivery(ies) recorded, %d new", len(deliveries), added)


@dataclass
class DispatchReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    digests: int = 0
    skipped: int = 0
    by_destination: dict[str, int] = field(default_factory=dict)


def backoff_seconds(attempts: int, retry_after: float | None) -> float:
    """Between dispatch runs: 30 s, 1 min, 2 min ... capped at 1 h, never sooner than asked."""
    delay = min(30.0 * 2.0 ** max(attempts - 1, 0), 3600.0)
    return max(delay, retry_after or 0.0)


class Dispatcher:
    def __init__(
        self,
        store: OutboxStore,
        senders: Mapping[str, Sender],
        digest_senders: Mapping[str, DigestSender] | None = None,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 10,
        lease_seconds: float = 120.0,
        batch: int = 100,
    ) -> None:
        self.store = store
        self.senders = senders
        self.digest_senders = digest_senders or {}
        self.clock = clock
        self.max_attempts = max_attempts
        self.lease = lease_seconds
        self.batch = batch

    def _lease(self, delivery: Delivery, etag: str, now: float) -> tuple[Delivery, str] | None:
        leased = replace(delivery, attempts=delivery.attempts + 1, next_attempt_at=now + self.lease)
        try:
            return leased, self.store.update_delivery(leased, etag)
        except ConflictError:
            return None  # another worker has it

    def _settle(self, delivery: Delivery, etag: str, outcome: Outcome, now: float, report: DispatchReport) -> None:
        if outcome.task is not None:
            self.store.put_task(outcome.task)
        if outcome.ok:
            final = replace(delivery, status=DeliveryStatus.DONE, last_status=outcome.status, last_error="")
            report.sent += 1
            report.by_destination[delivery.destination] = report.by_destination.get(delivery.destination, 0) + 1
        elif outcome.retryable and delivery.attempts < self.max_attempts:
            final = replace(
                delivery,
                next_attempt_at=now + backoff_seconds(delivery.attempts, outcome.retry_after),
                last_status=outcome.status,
                last_error=outcome.error,
            )
            report.retried += 1
        else:
            final = replace(
                delivery, status=DeliveryStatus.FAILED, last_status=outcome.status, last_error=outcome.error
            )
            report.failed += 1
            log.error(
                "delivery to %s failed for good (status %s): %s",
                delivery.destination,
                outcome.status,
                outcome.error,
            )
        try:
            self.store.update_delivery(final, etag)
        except ConflictError:
            log.warning("delivery %s changed under us; it will be looked at again", delivery.delivery_id)

    def dispatch_due(self, include_digests: bool = False) -> DispatchReport:
        report = DispatchReport()
        now = self.clock()
        digests: dict[str, list[tuple[Delivery, str]]] = defaultdict(list)
        for due, due_etag in self.store.due_deliveries(now, self.batch):
            if due.digest:
                if include_digests:
                    digests[due.destination].append((due, due_etag))
                continue
            sender = self.senders.get(due.destination)
            leased = self._lease(due, due_etag, now)
            if leased is None:
                report.skipped += 1
                continue
            delivery, etag = leased
            if sender is None:
                outcome = Outcome(ok=False, error=f"destination {delivery.destination!r} is no longer configured")
            else:
                outcome = _safe_send(sender.send, delivery, self.store)
            self._settle(delivery, etag, outcome, self.clock(), report)
        for destination, items in digests.items():
            self._dispatch_digest(destination, items, now, report)
        return report

    def _dispatch_digest(
        self, destination: str, items: list[tuple[Delivery, str]], now: float, report: DispatchReport
    ) -> None:
        leased = [x for x in (self._lease(d, e, now) for d, e in items) if x is not None]
        if not leased:
            return
        sender = self.digest_senders.get(destination)
        if sender is None:
            outcome = Outcome(ok=False, error=f"destination {destination!r} has no digest sender")
        else:
            try:
                outcome = sender([d for d, _ in leased])
            except Exception as exc:  # a sender bug must not lose the batch: retry later
                outcome = Outcome(ok=False, retryable=True, error=type(exc).__name__)
        report.digests += 1 if outcome.ok else 0
        for delivery, etag in leased:
            self._settle(delivery, etag, outcome, self.clock(), report)


def _safe_send(send: Callable[[Delivery, Any], Outcome], delivery: Delivery, tasks: Any) -> Outcome:
    try:
        return send(delivery, tasks)
    except Exception as exc:  # never let one destination's bug stop the others
        log.exception("sender for %s raised", delivery.destination)
        return Outcome(ok=False, retryable=True, error=f"sender raised {type(exc).__name__}")
