"""What an operator charts: OpenTelemetry metrics and spans, through the OpenTelemetry API only.

The instruments (names and attributes are part of the product: dashboards and alerts use them;
README "Telemetry" lists them):

==========================================  =========  ===========================================
``nsp_drift.events``                        counter    ``outcome`` accepted / duplicate / dropped,
                                                       ``reason`` (why dropped: out-of-scope...)
``nsp_drift.windows.opened``                counter    coalescing windows opened (message sent)
``nsp_drift.evaluations``                   counter    ``outcome`` done / retry / busy / none /
                                                       taken / failed / deferred, ``kind`` window /
                                                       batch / sweep
``nsp_drift.arm.requests``                  counter    ``status`` (HTTP status code), ``method``
``nsp_drift.arm.throttled``                 counter    ARM answered 429
``nsp_drift.transitions``                   counter    ``kind`` opened / changed / resolved, ``rule``
``nsp_drift.deliveries``                    counter    ``destination``, ``outcome`` sent / retry /
                                                       failed
``nsp_drift.deliveries.pending``            gauge      deliveries not yet delivered (outbox)
``nsp_drift.deliveries.oldest_pending_age`` gauge      seconds since the oldest pending one was due
==========================================  =========  ===========================================

Spans ``nsp_drift.intake`` -> ``nsp_drift.evaluate`` -> ``nsp_drift.deliver`` carry the Azure
operation's correlation id (``nsp_drift.correlation_id``; an evaluation that coalesced several
events carries all of them in ``nsp_drift.correlation_ids``): one search in Application Insights
follows a change from its event to the card.

``Telemetry`` takes OpenTelemetry providers; ``Telemetry.off()`` records nothing and imports
nothing (the default: no Application Insights connection string, nothing to pay at cold start).
The providers that export to Application Insights are built in ``shared.adapters.appinsights``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

INSTRUMENTATION_SCOPE = "nsp_drift"

EVENTS = "nsp_drift.events"
WINDOWS_OPENED = "nsp_drift.windows.opened"
EVALUATIONS = "nsp_drift.evaluations"
ARM_REQUESTS = "nsp_drift.arm.requests"
ARM_THROTTLED = "nsp_drift.arm.throttled"
TRANSITIONS = "nsp_drift.transitions"
DELIVERIES = "nsp_drift.deliveries"
DELIVERIES_PENDING = "nsp_drift.deliveries.pending"
OLDEST_PENDING_AGE = "nsp_drift.deliveries.oldest_pending_age"

SPAN_INTAKE = "nsp_drift.intake"
SPAN_EVALUATE = "nsp_drift.evaluate"
SPAN_DELIVER = "nsp_drift.deliver"
CORRELATION_ID = "nsp_drift.correlation_id"
CORRELATION_IDS = "nsp_drift.correlation_ids"


class Telemetry:
    """The app's instruments over the given providers (built once per process, by the wiring)."""

    def __init__(self, meter_provider: MeterProvider | None, tracer_provider: TracerProvider | None) -> None:
        self.enabled = meter_provider is not None or tracer_provider is not None
        self._tracer: Any = None
        self._instruments: dict[str, Any] = {}
        if meter_provider is not None:
            meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE)
            counters = {
                EVENTS: ("{event}", "Resource events received, by outcome and reason"),
                WINDOWS_OPENED: ("{window}", "Coalescing windows opened"),
                EVALUATIONS: ("{evaluation}", "Evaluations by outcome"),
                ARM_REQUESTS: ("{request}", "Azure Resource Manager requests (every attempt)"),
                ARM_THROTTLED: ("{request}", "Azure Resource Manager requests answered 429"),
                TRANSITIONS: ("{transition}", "Finding transitions by kind and rule"),
                DELIVERIES: ("{delivery}", "Delivery attempts by destination and outcome"),
            }
            for name, (unit, description) in counters.items():
                self._instruments[name] = meter.create_counter(name, unit=unit, description=description)
            self._instruments[DELIVERIES_PENDING] = meter.create_gauge(
                DELIVERIES_PENDING, unit="{delivery}", description="Deliveries not yet delivered"
            )
            self._instruments[OLDEST_PENDING_AGE] = meter.create_gauge(
                OLDEST_PENDING_AGE, unit="s", description="Age of the oldest pending delivery"
            )
        if tracer_provider is not None:
            self._tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)

    @classmethod
    def off(cls) -> Telemetry:
        return cls(None, None)

    # -- metrics -----------------------------------------------------------------------------------
    def _add(self, name: str, amount: int, attributes: Mapping[str, str] | None = None) -> None:
        instrument = self._instruments.get(name)
        if instrument is not None and amount:
            instrument.add(amount, attributes=dict(attributes or {}))

    def events(self, accepted: int, duplicates: int, dropped: Mapping[str, int]) -> None:
        self._add(EVENTS, accepted, {"outcome": "accepted"})
        self._add(EVENTS, duplicates, {"outcome": "duplicate"})
        for reason, count in dropped.items():
            self._add(EVENTS, count, {"outcome": "dropped", "reason": reason})

    def windows_opened(self, count: int) -> None:
        self._add(WINDOWS_OPENED, count)

    def evaluations(self, outcome: str, kind: str, count: int = 1) -> None:
        self._add(EVALUATIONS, count, {"outcome": outcome, "kind": kind})

    def arm_request(self, method: str, status: int) -> None:
        self._add(ARM_REQUESTS, 1, {"method": method, "status": str(status)})
        if status == 429:
            self._add(ARM_THROTTLED, 1, {"method": method})

    def transitions(self, transitions: Iterable[Any]) -> None:
        for t in transitions:
            self._add(TRANSITIONS, 1, {"kind": str(t.kind.value), "rule": t.rule_id})

    def delivery(self, destination: str, outcome: str) -> None:
        self._add(DELIVERIES, 1, {"destination": destination, "outcome": outcome})

    def backlog(self, pending: int, oldest_age_seconds: float) -> None:
        """The outbox as last seen by a delivery run (a gauge keeps the latest value)."""
        for name, value in ((DELIVERIES_PENDING, pending), (OLDEST_PENDING_AGE, max(oldest_age_seconds, 0.0))):
            instrument = self._instruments.get(name)
            if instrument is not None:
                instrument.set(value)

    # -- spans -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def span(self, name: str, correlation_ids: Sequence[str] = (), **attributes: str | int) -> Iterator[Any]:
        """A span carrying the correlation id(s) it serves; a no-op when tracing is off."""
        if self._tracer is None:
            yield None
            return
        ids = [c for c in dict.fromkeys(correlation_ids) if c]
        attrs: dict[str, Any] = {k: v for k, v in attributes.items() if v != ""}
        if ids:
            attrs[CORRELATION_ID] = ids[0]
            attrs[CORRELATION_IDS] = ids
        with self._tracer.start_as_current_span(name, attributes=attrs) as span:
            yield span


def correlation_ids_of(transitions: Iterable[Any]) -> tuple[str, ...]:
    """Every correlation id the transitions' provenance carries, in order, once."""
    ids: dict[str, None] = {}
    for t in transitions:
        for c in t.provenance.correlation_ids:
            ids.setdefault(c, None)
    return tuple(ids)
