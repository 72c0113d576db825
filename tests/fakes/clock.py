"""A clock for tests that must not depend on how fast the machine is.

``VirtualClock`` is a time source (call it) whose time passes only when the code under test sleeps
through it or the test ``advance``s it: a busy machine makes such a test slower, never different.
It records every sleep asked for (``sleeps``), so a test asserts on the waits that happened.

Asynchronous sleeps are a small discrete-event simulation, so that what a server on the other end
sees (its bucket reads the same clock) is what the client planned:

* sleepers wake in the order of their wake-up times, and the clock moves to each one's time as it
  wakes, never beyond;
* the clock never moves while a request is on the wire (between ``wire_start`` and ``wire_end``,
  which the test's wrappers call around each request): a request sent at virtual time t is
  served at t, however long the machine takes to deliver it.

Thread-safe to read (the bench server's bucket calls it from its connection threads); sleeps and
the wire counter belong to the event loop that runs the client.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from typing import Any


class VirtualClock:
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        self.on_wire = 0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._handing_over = False  # a sleeper was woken and has not resumed yet

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    # -- sleeping ---------------------------------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep`` in virtual time (see the module docstring)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self.sleeps.append(seconds)
            wake = self._now + max(seconds, 0.0)
        entry = (wake, next(self._order), loop.create_future())
        heapq.heappush(self._sleepers, entry)
        self._wake_next()
        try:
            await entry[2]
        except asyncio.CancelledError:
            if entry in self._sleepers:
                self._sleepers.remove(entry)
                heapq.heapify(self._sleepers)
            else:
                self._handing_over = False
            loop.call_soon(self._wake_next)
            raise
        self._handing_over = False
        with self._lock:
            self._now = max(self._now, wake)
        # The woken task goes on (usually straight onto the wire) before the next sleeper is considered.
        loop.call_soon(self._wake_next)

    def sleep_sync(self, seconds: float) -> None:
        """``time.sleep`` in virtual time (one caller at a time: the clock moves on at once)."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(seconds, 0.0)

    def _wake_next(self) -> None:
        """Wake the earliest sleeper, once nothing is on the wire and no other sleeper is waking."""
        if self.on_wire or self._handing_over or not self._sleepers:
            return
        _, _, future = heapq.heappop(self._sleepers)
        self._handing_over = True
        future.set_result(None)

    # -- the wire ---------------------------------------------------------------------------------

    def wire_start(self) -> None:
        self.on_wire += 1

    def wire_end(self) -> None:
        self.on_wire -= 1
        if self.on_wire == 0:
            asyncio.get_running_loop().call_soon(self._wake_next)

    @property
    def slept(self) -> float:
        """Total of all sleeps asked for."""
        with self._lock:
            return sum(self.sleeps)


class OnTheWire:
    """Wraps the next policy of an azure-core pipeline so the clock knows a request is on the wire."""

    def __init__(self, inner: Any, clock: VirtualClock) -> None:
        self.inner = inner
        self.clock = clock

    async def send(self, request: Any) -> Any:
        self.clock.wire_start()
        try:
            return await self.inner.send(request)
        finally:
            self.clock.wire_end()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
