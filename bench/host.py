"""The Azure Functions host, played inside a benchmark process, and the storage call counter.

``FunctionsHost`` imports ``function_app`` (the indexing the host does), takes the user functions
from ``app.get_functions()`` and invokes them the way the host does:

- Event Grid trigger: one invocation per event, the payload decoded by the binding's own
  converter (``EventGridEventInConverter``);
- timer triggers: one invocation with a ``TimerRequest``;
- queue trigger on ``nsp-drift-evaluations`` (Azurite): messages received ``batchSize`` at a time,
  a new batch fetched when at most ``newBatchThreshold`` are running, each message kept invisible
  while its invocation runs (``functionTimeout``), deleted after success; after a failure it
  becomes visible again after ``visibilityTimeout`` and goes to ``<queue>-poison`` after
  ``maxDequeueCount`` attempts. Those numbers are read from host.json. Bodies are base64-decoded
  (``messageEncoding``).

Up to ``batchSize + newBatchThreshold`` invocations run at once, on threads, as the Python worker
runs sync functions; every invocation is timed on its own (``Invocation.wall``). The host's own
queue calls (receive, delete, properties) go through a client of its own and are counted apart
(``host_calls``): they are the platform's, not the app's.

``StorageCalls`` counts every Table and Queue request the app makes, at the HTTP layer: a response
hook on the one requests session the app's Table and Queue clients share
(``shared.adapters.storage_http.shared_session``); retries are separate requests and count. Each
request is attributed to the function whose invocation made it (a context variable, which asyncio
carries into the shared loop's tasks and ``to_thread`` workers).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
CURRENT = contextvars.ContextVar("bench_function", default="")
# Between empty receives: from 0.2 s doubling to 1 s (the host backs off up to maxPollingInterval,
# 5 s here; 1 s keeps most of that idle time out of the figures).
POLL_SECONDS, POLL_MAX_SECONDS = 0.2, 1.0


def _seconds(text: str) -> float:
    hours, minutes, seconds = (float(p) for p in text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def host_settings(path: Path = ROOT / "host.json") -> dict[str, float]:
    document = json.loads(path.read_text())
    queues = document["extensions"]["queues"]
    return {
        "batch_size": int(queues.get("batchSize", 16)),
        "new_batch_threshold": int(queues.get("newBatchThreshold", 8)),
        "visibility_timeout": _seconds(queues.get("visibilityTimeout", "00:00:00")),
        "max_dequeue_count": int(queues.get("maxDequeueCount", 5)),
        "function_timeout": _seconds(document.get("functionTimeout", "00:10:00")),
    }


def endpoints(connection_string: str) -> dict[str, str]:
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    return {k: v for k, v in parts.items() if k.endswith("Endpoint")}


class StorageCalls:
    """Table and Queue requests of the app, by (function, service, operation)."""

    def __init__(self, connection_string: str, table_prefix: str) -> None:
        found = endpoints(connection_string)
        self.ports = {
            urlsplit(found["TableEndpoint"]).port: "table",
            urlsplit(found["QueueEndpoint"]).port: "queue",
        }
        self.prefix = table_prefix.lower()
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def install(self) -> StorageCalls:
        from shared.adapters.storage_http import shared_session

        shared_session().hooks["response"].append(self._hook)
        return self

    def _hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        request = response.request
        url = urlsplit(request.url)
        service = self.ports.get(url.port, f"other:{url.port}")
        segments = url.path.strip("/").split("/")
        resource = segments[1] if len(segments) > 1 else ""
        resource = resource.split("(", 1)[0]
        if service == "table" and resource.lower().startswith(self.prefix):
            resource = resource[len(self.prefix) :]
        elif service == "queue" and len(segments) > 2:
            resource = "/".join(segments[1:3])
        key = (CURRENT.get() or "outside an invocation", service, f"{request.method} {resource}")
        with self._lock:
            self.counts[key] += 1

    def total(self, service: str | None = None, function: str | None = None) -> int:
        with self._lock:
            return sum(
                n
                for (f, s, _), n in self.counts.items()
                if (service is None or s == service) and (function is None or f == function)
            )

    def summary(self) -> dict[str, Any]:
        with self._lock:
            items = sorted(self.counts.items())
        by_function: dict[str, dict[str, int]] = {}
        for (function, service, _), n in items:
            by_function.setdefault(function, Counter())[service] += n  # type: ignore[index]
        return {
            "table": sum(n for (_, s, _), n in items if s == "table"),
            "queue": sum(n for (_, s, _), n in items if s == "queue"),
            "by_function": {f: dict(c) for f, c in by_function.items()},
            "by_operation": {f"{f} | {s} {op}": n for (f, s, op), n in items},
        }


@dataclass(frozen=True)
class Invocation:
    function: str
    started: float  # seconds since the host started
    wall: float
    error: str = ""


class FunctionsHost:
    def __init__(self, connection_string: str, settings: dict[str, float] | None = None) -> None:
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

        import function_app
        from shared.core.work import QUEUE_NAME

        self.settings = settings or host_settings()
        self.functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
        self.queue = QueueClient.from_connection_string(
            connection_string,
            QUEUE_NAME,
            message_decode_policy=TextBase64DecodePolicy(),
            message_encode_policy=TextBase64EncodePolicy(),
        )
        self.poison = QueueClient.from_connection_string(
            connection_string, f"{QUEUE_NAME}-poison", message_encode_policy=TextBase64EncodePolicy()
        )
        self.invocations: list[Invocation] = []
        self.host_calls: Counter[str] = Counter()
        self.poisoned = 0
        self.timed_out = False  # the bench's own deadline passed
        self.killed: list[Invocation] = []  # invocations that reached functionTimeout
        self.lost_leases = 0  # a message's delete refused: its pop receipt changed meanwhile
        self._running: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._queue_running = 0

    # -- one invocation ------------------------------------------------------------------------
    def invoke(self, function: str, argument: Any) -> Invocation:
        token = CURRENT.set(function)
        started = time.perf_counter()
        key = threading.get_ident()
        with self._lock:
            self._running[key] = (function, started)
        error = ""
        try:
            self.functions[function](argument)
        except Exception as exc:  # the host logs it and, for a queue message, retries it
            error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            CURRENT.reset(token)
        record = Invocation(function, started - self._t0, time.perf_counter() - started, error)
        with self._lock:
            self._running.pop(key, None)
            self.invocations.append(record)
        return record

    def _overdue(self) -> list[Invocation]:
        """Running invocations past functionTimeout: the host would kill the worker now."""
        now = time.perf_counter()
        limit = self.settings["function_timeout"]
        with self._lock:
            running = list(self._running.values())
        return [
            Invocation(function, started - self._t0, limit, f"killed: functionTimeout ({limit:.0f} s)")
            for function, started in running
            if now - started >= limit
        ]

    @staticmethod
    def event_argument(payload: dict[str, Any]) -> Any:
        from azure.functions.eventgrid import EventGridEventInConverter
        from azure.functions.meta import Datum

        return EventGridEventInConverter.decode(Datum(json.dumps(payload), "json"), trigger_metadata={})

    @staticmethod
    def timer_argument(past_due: bool = False) -> Any:
        from azure.functions.timer import TimerRequest

        return TimerRequest(past_due=past_due)

    def _process(self, message: Any) -> None:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.functions.queue import QueueMessage

        try:
            argument = QueueMessage(
                id=message.id,
                body=str(message.content).encode(),
                dequeue_count=message.dequeue_count,
                pop_receipt=message.pop_receipt,
            )
            outcome = self.invoke("evaluate_target", argument)
            if not outcome.error:
                try:
                    self._call("delete", self.queue.delete_message, message)
                except ResourceNotFoundError:
                    with self._lock:
                        self.lost_leases += 1
            elif (message.dequeue_count or 1) >= self.settings["max_dequeue_count"]:
                self._call("poison send", self.poison.send_message, message.content)
                self._call("delete", self.queue.delete_message, message)
                with self._lock:
                    self.poisoned += 1
            else:
                self._call(
                    "update",
                    self.queue.update_message,
                    message,
                    visibility_timeout=int(self.settings["visibility_timeout"]),
                )
        finally:
            with self._lock:
                self._queue_running -= 1

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.host_calls[what] += 1
        return method(*args, **kwargs)

    # -- the run -------------------------------------------------------------------------------
    def run(self, triggers: list[tuple[str, Any]], deadline_seconds: float) -> float:
        """Invoke ``triggers`` (function name, argument), all at once as the platform would push
        them, and run the queue trigger until the queue is empty and nothing runs. Returns the
        wall seconds from the first trigger to the last invocation's end."""
        from azure.core.exceptions import ResourceExistsError

        for client in (self.queue, self.poison):
            with contextlib.suppress(ResourceExistsError):
                self._call("create", client.create_queue)
        workers = int(self.settings["batch_size"] + self.settings["new_batch_threshold"])
        started = time.perf_counter()
        deadline = started + deadline_seconds
        pending: set[Future[Any]] = set()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="invocation")
        poll = POLL_SECONDS
        try:
            for function, argument in triggers:
                pending.add(pool.submit(self.invoke, function, argument))
            while True:
                finished = {f for f in pending if f.done()}
                for future in finished:
                    future.result()  # a failing host call (not an invocation: those are recorded) stops the run
                pending -= finished
                received: list[Any] = []
                with self._lock:
                    room = self._queue_running <= self.settings["new_batch_threshold"]
                if room:
                    received = list(
                        self._call(
                            "receive",
                            self.queue.receive_messages,
                            messages_per_page=int(self.settings["batch_size"]),
                            max_messages=int(self.settings["batch_size"]),
                            visibility_timeout=max(1, math.ceil(self.settings["function_timeout"])),
                        )
                    )
                    for message in received:
                        with self._lock:
                            self._queue_running += 1
                        pending.add(pool.submit(self._process, message))
                overdue = self._overdue()
                if overdue:
                    # The host kills the worker process at functionTimeout: the invocation's work
                    # is lost. The run ends here (its retries would only be killed the same way).
                    self.killed = overdue
                    with self._lock:
                        self.invocations.extend(overdue)
                    break
                if received:
                    poll = POLL_SECONDS
                    continue
                if not pending:
                    left = self._call("properties", self.queue.get_queue_properties).approximate_message_count
                    if not left:
                        break
                if time.perf_counter() > deadline:
                    self.timed_out = True
                    break
                time.sleep(poll)
                poll = min(poll * 2, POLL_MAX_SECONDS)
        finally:
            # Threads still running (a killed invocation) die with the process (the caller exits).
            pool.shutdown(wait=not (self.killed or self.timed_out), cancel_futures=True)
        return time.perf_counter() - started

    def summary(self) -> dict[str, Any]:
        by_function: dict[str, list[Invocation]] = {}
        for record in self.invocations:
            by_function.setdefault(record.function, []).append(record)
        out: dict[str, Any] = {}
        for function, records in sorted(by_function.items()):
            longest = max(records, key=lambda r: r.wall)
            out[function] = {
                "count": len(records),
                "failed": sum(1 for r in records if r.error),
                "longest_seconds": round(longest.wall, 2),
                "total_seconds": round(sum(r.wall for r in records), 2),
                "first_start": round(min(r.started for r in records), 2),
                "last_end": round(max(r.started + r.wall for r in records), 2),
                "errors": sorted({r.error for r in records if r.error})[:5],
            }
        return out

    def over(self, seconds: float) -> int:
        return sum(1 for r in self.invocations if r.wall > seconds)


def peak_rss_mb() -> float:
    """VmHWM: this process's peak resident set (the interpreter, the SDKs, the app's work)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0
