"""Slow down before ARM throttles: pace reads on ``x-ms-ratelimit-remaining-subscription-reads``.

ARM gives each principal a read bucket per subscription (250, refilling 25/s). Every response
says how much is left; when that falls under a reserve, this policy spaces the next requests to
the refill rate instead of running into 429s. It adds no retry: azure-core's RetryPolicy stays
the only retry layer (and still honours Retry-After if a 429 happens anyway).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy

_SUBSCRIPTION = re.compile(r"/subscriptions/([0-9a-fA-F-]{36})", re.IGNORECASE)
HEADER = "x-ms-ratelimit-remaining-subscription-reads"


class ReadBudget:
    """What we know of each subscription's read bucket (shared by every client of a process)."""

    def __init__(self, refill_per_second: float = 25.0, reserve: int = 40) -> None:
        self.rate = refill_per_second
        self.reserve = reserve
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, float]] = {}  # subscription -> (remaining, when)
        self._next_slot: dict[str, float] = {}
        self.waited_seconds = 0.0

    def observe(self, subscription: str, remaining: float) -> None:
        with self._lock:
            self._known[subscription] = (remaining, time.monotonic())

    def delay(self, subscription: str) -> float:
        """Seconds to wait before the next read, reserving a slot when pacing."""
        now = time.monotonic()
        with self._lock:
            known = self._known.get(subscription)
            if known is None:
                return 0.0
            remaining, at = known
            estimate = remaining + (now - at) * self.rate
            if estimate > self.reserve:
                self._known[subscription] = (estimate - 1, now)
                return 0.0
            slot = max(self._next_slot.get(subscription, now), now) + 1.0 / self.rate
            self._next_slot[subscription] = slot
            wait = slot - now
            self.waited_seconds += wait
            return wait


class ArmReadPacing(AsyncHTTPPolicy):  # type: ignore[type-arg]
    def __init__(self, budget: ReadBudget) -> None:
        super().__init__()
        self.budget = budget

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        match = _SUBSCRIPTION.search(request.http_request.url)
        subscription = match.group(1).lower() if match else ""
        is_read = request.http_request.method.upper() == "GET"
        if subscription and is_read:
            wait = self.budget.delay(subscription)
            if wait > 0:
                await asyncio.sleep(wait)
        response: PipelineResponse[Any, Any] = await self.next.send(request)
        remaining = response.http_response.headers.get(HEADER)
        if subscription and is_read and remaining and remaining.isdigit():
            self.budget.observe(subscription, float(remaining))
        return response
