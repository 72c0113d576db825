"""One asyncio event loop per process, on a daemon thread.

Async SDK clients (aiohttp sessions) are bound to the loop that created them; Functions invokes
sync handlers on a thread pool and the CLI runs several commands. Running every coroutine on one
long-lived loop lets the wiring reuse clients (and their connection pools) across invocations.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="nsp-drift-loop", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def start(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` on the shared loop without waiting for it (its future, if anyone cares)."""
    return asyncio.run_coroutine_threadsafe(coro, _get_loop())


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the shared loop and wait for its result (re-raising its exception)."""
    return asyncio.run_coroutine_threadsafe(coro, _get_loop()).result(timeout)
