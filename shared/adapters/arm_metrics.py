"""Counts every ARM request attempt and its status for the operators' metrics (shared.adapters.telemetry).

A per-retry policy: azure-core's retries are separate attempts, and a 429 that azure-core waits
out is exactly what an operator wants to see counted as throttling.
"""

from __future__ import annotations

from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from shared.adapters.telemetry import Telemetry


class ArmMetricsPolicy(SansIOHTTPPolicy[Any, Any]):
    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        self._telemetry.arm_request(request.http_request.method, response.http_response.status_code)
