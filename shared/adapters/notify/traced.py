"""A sender wrapped for the operators: one ``nsp_drift.deliver`` span per send, carrying the
change's correlation ids, and ``nsp_drift.deliveries`` counted by destination and outcome."""

from __future__ import annotations

from shared.adapters.telemetry import SPAN_DELIVER, Telemetry
from shared.core.notify.base import Delivery, Outcome, Sender, TaskLookup


class TracedSender:
    def __init__(self, inner: Sender, telemetry: Telemetry) -> None:
        self.inner = inner
        self.name = inner.name
        self._telemetry = telemetry

    def send(self, delivery: Delivery, tasks: TaskLookup) -> Outcome:
        ids = [str(c) for c in delivery.transition.get("correlation_ids") or ()]
        rule = str(delivery.transition.get("rule", ""))
        with self._telemetry.span(SPAN_DELIVER, ids, destination=delivery.destination, rule=rule):
            outcome = self.inner.send(delivery, tasks)
        self._telemetry.delivery(delivery.destination, _outcome(outcome))
        return outcome


def _outcome(outcome: Outcome) -> str:
    if outcome.ok:
        return "sent"
    return "retry" if outcome.retryable else "failed"
