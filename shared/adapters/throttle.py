"""Slow down before ARM throttles: pace reads on ``x-ms-ratelimit-remaining-subscription-reads``.

ARM gives each principal a read bucket per subscription (250 tokens, refilling 25 per second;
tenant-level reads have their own). Every response says how many tokens are left. ``ReadBudget``
keeps a local estimate of each bucket and, once the estimate falls to a reserve, spaces the next
reads at the refill rate instead of running into 429s:

- each read takes a token locally *when it is sent* (a reservation), so the concurrent reads of
  one process never overshoot together: the server's figure lags by the requests in flight;
- the local estimate starts refilling when a read is sent, ARM's when it arrives: during a burst
  the estimate runs ahead by up to ``rate x round-trip``, so the reserve grows by that much (the
  round-trip is tracked per bucket: quick to rise, slow to decay; counted up to 2 s, and the
  reserve stays under half the bucket);
- the refill raises the estimate at most to the capacity less the reads in flight: a read not yet
  answered may not have reached ARM yet (a stalled machine sends it late), and when it does it
  takes a token from ARM's bucket, full or not;
- each response can only lower the estimate to the server's figure ``R`` (others may share the
  bucket: other instances of the app, a person in the portal); it never raises it, because ``R``
  may predate reads already answered (responses overtake each other) — the refill, at ARM's rate,
  is what raises it;
- below the reserve, reads are scheduled one refill interval apart (virtual scheduling): the
  further below, the longer the wait, so several processes sharing one identity converge on the
  refill rate together rather than each taking it all;
- a 429 (it can still happen: others share the bucket) blocks the whole subscription until its
  ``Retry-After``, not just the request that got it.

It adds no retry: azure-core's RetryPolicy stays the only retry layer (and still honours
``Retry-After`` on a 429). Put the policy in ``per_retry_policies`` so every attempt, retries
included, is paced and observed; ``per_call_policies`` also works, but then only first attempts
are paced. Build one policy per client with ``read_pacing_policy(budget)``: a policy instance is
linked into exactly one pipeline (azure-core sets its ``next``), while the budget is shared by all.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy

HEADER = "x-ms-ratelimit-remaining-subscription-reads"
TENANT_HEADER = "x-ms-ratelimit-remaining-tenant-reads"
TENANT = "tenant"
MAX_LAG = 2.0  # seconds of round-trip the reserve grows by, at most

_SUBSCRIPTION = re.compile(
    r"/subscriptions/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
)
# Resource Graph has its own per-user quota (shared.adapters.resource_graph), not the read bucket.
_NOT_ARM_READS = ("/providers/microsoft.resourcegraph/",)


@dataclass
class _Bucket:
    tokens: float  # local estimate; negative = reads already scheduled beyond the reserve
    at: float
    in_flight: int = 0  # reserved and not yet answered
    blocked_until: float = 0.0
    lag: float = 0.0  # recent round-trip (seconds): how far ARM's bucket trails the estimate


@dataclass(frozen=True)
class BudgetStats:
    reads: int
    paced: int
    waited_seconds: float
    throttled: int


class ReadBudget:
    """What we know of each ARM read bucket (share one per process, across every client)."""

    def __init__(
        self,
        capacity: float = 250.0,
        refill_per_second: float = 25.0,
        reserve: float = 25.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if refill_per_second <= 0 or capacity <= reserve:
            raise ValueError("need refill_per_second > 0 and capacity > reserve")
        self.capacity = capacity
        self.rate = refill_per_second
        self.reserve = reserve
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._reads = 0
        self._paced = 0
        self._waited = 0.0
        self._throttled = 0

    def _bucket(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            # Unknown until the first response: assume a full bucket, corrected by the first answer.
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        else:
            # The refill stops at what the unanswered reads leave: each may still be on its way to
            # ARM (sent late by a stalled machine, or not sent yet) and will take a token from
            # ARM's bucket however full it is by then. Refilling to full capacity across a stall
            # let the next reads go at once and meet 429s.
            ceiling = self.capacity - bucket.in_flight
            bucket.tokens = min(ceiling, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def acquire(self, key: str) -> float:
        """Reserve a read on ``key``; returns the seconds to wait before sending it."""
        now = self._clock()
        with self._lock:
            bucket = self._bucket(key, now)
            wait = 0.0
            # A slow answer (a big list) must not stall everything: the lag counts up to MAX_LAG.
            reserve = min(self.reserve + self.rate * min(bucket.lag, MAX_LAG), self.capacity / 2)
            if bucket.tokens - 1 < reserve:
                wait = (reserve + 1 - bucket.tokens) / self.rate
            wait = max(wait, bucket.blocked_until - now)
            bucket.tokens -= 1
            bucket.in_flight += 1
            self._reads += 1
            if wait > 0:
                self._paced += 1
                self._waited += wait
            return wait

    def now(self) -> float:
        return self._clock()

    def release(
        self,
        key: str,
        remaining: float | None = None,
        retry_after: float | None = None,
        round_trip: float | None = None,
    ) -> None:
        """The read on ``key`` was answered (``remaining``: the server's figure; ``round_trip``: from
        sending to the answer) or failed (all None)."""
        now = self._clock()
        with self._lock:
            bucket = self._bucket(key, now)
            bucket.in_flight = max(bucket.in_flight - 1, 0)
            if round_trip is not None:
                bucket.lag = max(round_trip, bucket.lag * 0.95)
            if remaining is not None:
                # Only ever lower the estimate: a figure the server computed earlier than reads we
                # have since seen answered (responses overtake each other) would be too high, and
                # raising on it is how a paced burst still meets a 429. Refill raises it again.
                bucket.tokens = min(bucket.tokens, remaining, self.capacity)
            if retry_after is not None:
                self._throttled += 1
                bucket.blocked_until = max(bucket.blocked_until, now + retry_after)
                bucket.tokens = min(bucket.tokens, 0.0)

    def remaining(self, key: str) -> float | None:
        """The current estimate for ``key`` (None before any read)."""
        with self._lock:
            if key not in self._buckets:
                return None
            return self._bucket(key, self._clock()).tokens

    def stats(self) -> BudgetStats:
        with self._lock:
            return BudgetStats(self._reads, self._paced, round(self._waited, 3), self._throttled)

    @property
    def waited_seconds(self) -> float:
        return self.stats().waited_seconds


def budget_key(method: str, url: str) -> str | None:
    """The bucket a request draws on: the subscription for its reads, ``tenant`` for tenant-level
    reads, None for anything that is not an ARM read (writes, Resource Graph queries)."""
    if method.upper() != "GET":
        return None
    lower = url.lower()
    if any(marker in lower for marker in _NOT_ARM_READS):
        return None
    match = _SUBSCRIPTION.search(url)
    return match.group(1).lower() if match else TENANT


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``/``x-ms-retry-after-ms``."""
    for name, scale in (("retry-after-ms", 1000.0), ("x-ms-retry-after-ms", 1000.0), ("retry-after", 1.0)):
        text = headers.get(name)
        if not text:
            continue
        try:
            return max(float(text) / scale, 0.0)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            continue
        return max(when.timestamp() - time.time(), 0.0)
    return None


def _remaining(headers: Mapping[str, str], key: str) -> float | None:
    text = headers.get(TENANT_HEADER if key == TENANT else HEADER)
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _observe(budget: ReadBudget, key: str, response: PipelineResponse[Any, Any], sent: float) -> None:
    http = response.http_response
    headers = http.headers
    retry_after = parse_retry_after(headers) if http.status_code == 429 else None
    if http.status_code == 429 and retry_after is None:
        retry_after = 1.0 / budget.rate
    budget.release(key, _remaining(headers, key), retry_after, budget.now() - sent)


class ArmReadPacing(AsyncHTTPPolicy):  # type: ignore[type-arg]
    """Async policy: waits for the budget before a read, feeds the answer back to it."""

    def __init__(self, budget: ReadBudget, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__()
        self.budget = budget
        self._sleep = sleep

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        http = request.http_request
        key = budget_key(http.method, http.url)
        if key is None:
            response: PipelineResponse[Any, Any] = await self.next.send(request)
            return response
        wait = self.budget.acquire(key)
        try:
            if wait > 0:
                await self._sleep(wait)
            sent = self.budget.now()
            response = await self.next.send(request)
        except BaseException:
            self.budget.release(key)
            raise
        _observe(self.budget, key, response, sent)
        return response


def read_pacing_policy(budget: ReadBudget) -> ArmReadPacing:
    """A fresh async policy for one client's ``per_retry_policies`` (or ``per_call_policies``)."""
    return ArmReadPacing(budget)
