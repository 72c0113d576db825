"""OpenTelemetry providers that export to Application Insights (azure-monitor-opentelemetry-exporter).

Built only when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set. Cold start: the OpenTelemetry SDK
is imported when the context is built, but the Azure Monitor exporter (about 0.4 s of imports on
this machine) only on the first export, on the SDK's own background thread (the metric reader's
timer, the span processor's worker): the first invocation does not wait for it, and nothing
recorded before it is lost (the SDK aggregates until the first export).

Entra-authenticated ingestion (the deployment disables local auth on the Application Insights
resource): ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD[;ClientId=...]`` makes the
exporters sign in with the app's managed identity (system-assigned, or the user-assigned ClientId),
which needs "Monitoring Metrics Publisher" on the resource (infra/app/rbac.bicep grants it).

Why not ``configure_azure_monitor`` (the distro): it also installs instrumentations for Django,
Flask, FastAPI, psycopg2, requests, urllib... which this app does not use, at about 1 s of
imports; the exporter is the part that talks to Application Insights.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

SERVICE_NAME = "nsp-drift"
EXPORT_INTERVAL_MS = 60_000  # Application Insights' own metric granularity is a minute

# What AzureMonitorMetricExporter asks for (its APPLICATION_INSIGHTS_METRIC_TEMPORALITIES): counters
# as deltas, the rest cumulative. The reader reads this from the exporter when it is built, before
# the real exporter exists.
_TEMPORALITY = {
    Counter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
}


def entra_client_id(authentication: str) -> str | None:
    """``None``: key-based ingestion; ``""``: system-assigned identity; else the user-assigned
    identity's client id (``Authorization=AAD;ClientId=...``)."""
    parts = dict(p.split("=", 1) for p in authentication.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    return parts.get("ClientId", "")


def _exporter_kwargs(connection_string: str, client_id: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"connection_string": connection_string}
    if client_id is not None:
        from azure.identity import ManagedIdentityCredential

        kwargs["credential"] = ManagedIdentityCredential(client_id=client_id or None)
    return kwargs


class _LazyMetricExporter(MetricExporter):
    def __init__(self, connection_string: str, client_id: str | None) -> None:
        super().__init__(preferred_temporality=_TEMPORALITY)  # type: ignore[arg-type]
        self._connection_string = connection_string
        self._client_id = client_id
        self._real: Any = None
        self._lock = threading.Lock()

    def _exporter(self) -> Any:
        with self._lock:
            if self._real is None:
                from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter

                self._real = AzureMonitorMetricExporter(**_exporter_kwargs(self._connection_string, self._client_id))
            return self._real

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        result: MetricExportResult = self._exporter().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True if self._real is None else bool(self._real.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._real is not None:
            self._real.shutdown(timeout_millis=timeout_millis, **kwargs)


class _LazySpanExporter(SpanExporter):
    def __init__(self, connection_string: str, client_id: str | None) -> None:
        self._connection_string = connection_string
        self._client_id = client_id
        self._real: Any = None
        self._lock = threading.Lock()
        self.tracer_provider: TracerProvider | None = None  # its resource names the app (cloud role)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._real is None:
                from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

                kwargs = _exporter_kwargs(self._connection_string, self._client_id)
                self._real = AzureMonitorTraceExporter(tracer_provider=self.tracer_provider, **kwargs)
        result: SpanExportResult = self._real.export(spans)
        return result

    def shutdown(self) -> None:
        if self._real is not None:
            self._real.shutdown()


def application_insights(connection_string: str, authentication: str = "") -> tuple[MeterProvider, TracerProvider]:
    """Providers exporting every minute (metrics) and in batches (spans) to Application Insights."""
    client_id = entra_client_id(authentication)
    resource = Resource.create({"service.name": SERVICE_NAME})
    reader = PeriodicExportingMetricReader(
        _LazyMetricExporter(connection_string, client_id), export_interval_millis=EXPORT_INTERVAL_MS
    )
    meters = MeterProvider(metric_readers=[reader], resource=resource)
    tracers = TracerProvider(resource=resource)
    spans = _LazySpanExporter(connection_string, client_id)
    spans.tracer_provider = tracers
    tracers.add_span_processor(BatchSpanProcessor(spans))
    return meters, tracers
