"""What the Functions handlers call: builds the ports lazily from settings, once per process.

Each ``handle_*`` is the imperative shell around the pipeline's steps: decode the binding, build
the invocation's readers, call the step, decide what the runtime should see (return =
acknowledge, raise = retry). The context holds clients and stores (connection pools), never
pipeline state: the steps keep nothing between invocations.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, cast

from shared.adapters import runtime
from shared.adapters.telemetry import SPAN_EVALUATE, SPAN_INTAKE, Telemetry, correlation_ids_of
from shared.core.changes import Target
from shared.core.state.base import StateStore, StatusStore, StoreUnavailable
from shared.core.work import QUEUE_NAME
from shared.entrypoints.settings import Settings, SettingsError, load_settings
from shared.service.pipeline import Pipeline, Readers, TransitionSink, WindowStatus, deliver

log = logging.getLogger("nsp_drift")


class LoggingSink:
    """Until a delivery sink is configured, transitions are logged as structured lines."""

    def emit(self, transitions: Any) -> None:
        for t in transitions:
            log.warning(
                "drift %s %s on %s (%s): %s [by %s]",
                t.kind.value,
                t.rule_id,
                t.resource_id,
                t.severity,
                t.summary,
                t.provenance.changed_by,
            )


@dataclass
class AppContext:
    settings: Settings
    store: StateStore
    pipeline: Pipeline  # the ports bundle: store, outbox, queue, clock, policy (immutable)
    queue: Any
    clients: Any  # the process's ARM client factory (connection pools); readers are per invocation
    dispatcher: Any = None  # shared.service.dispatch.Dispatcher when destinations are configured
    telemetry: Telemetry = field(default_factory=Telemetry.off)
    # The outbox backlog gauges cost a read of the pending deliveries: at most once per interval
    # per process (and at every sweep timer run).
    backlog_interval: float = 60.0
    backlog_seen_at: float = field(default=float("-inf"), repr=False)
    # The sweeps the heartbeat watches: kind ("sweep", "full") -> its schedule's interval in seconds.
    sweep_intervals: dict[str, float] = field(default_factory=dict)

    def readers(self) -> Readers:
        """Fresh readers for one invocation (their lookup caches must not outlive it)."""
        from shared.wiring import readers_for

        return readers_for(self.clients)


_lock = threading.Lock()
_context: AppContext | None = None


class CountingSink:
    """Counts the transitions recorded (``nsp_drift.transitions``), then passes them on.

    A transition can be emitted more than once (each account of a perimeter reports the
    perimeter's change; a retried evaluation emits again): the outbox keeps one per idempotency
    key, and so does this count, over the last ``remember`` keys this process saw. Only the count
    uses this memory; what is delivered never depends on it."""

    def __init__(self, inner: TransitionSink, telemetry: Telemetry, remember: int = 10_000) -> None:
        self.inner = inner
        self._telemetry = telemetry
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()

    def emit(self, transitions: Any) -> None:
        transitions = list(transitions)
        self.inner.emit(transitions)
        fresh = []
        with self._lock:
            for t in transitions:
                if t.idempotency_key not in self._seen:
                    self._seen[t.idempotency_key] = None
                    fresh.append(t)
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        self._telemetry.transitions(fresh)


def telemetry_for(settings: Settings) -> Telemetry:
    """Exporting to Application Insights when its connection string is set, else off (free)."""
    from shared import wiring

    return wiring.telemetry(settings.appinsights_connection, settings.appinsights_authentication)


def build_context(
    settings: Settings,
    sink: TransitionSink | None = None,
    store: StateStore | None = None,
    clients: Any = None,
    telemetry: Telemetry | None = None,
    warm_up: bool = False,
) -> AppContext:
    """``sink``, ``store``, ``clients``, ``telemetry``: replace what the settings would build (tests).
    ``warm_up``: start the live ARM clients' warm-up (``LiveClients.warm_up``) first."""
    from shared import wiring
    from shared.core.targeting import Scope

    telemetry = telemetry or telemetry_for(settings)
    live = None
    if clients is None and not settings.estate_path:
        clients = live = wiring.LiveClients(settings.cloud, telemetry=telemetry)
        if warm_up:
            live.warm_up()  # the SDK import and the first token overlap the rest of this and the state reads
    try:
        store, queue = wiring.table_ports(
            settings.storage_connection,
            settings.table_service_uri,
            settings.queue_service_uri,
            settings.table_prefix,
            settings.cloud,
            store,
        )
        dispatcher = None
        if sink is None:
            sink, dispatcher = _delivery(store, settings.dispatch_budget_seconds, telemetry)
        if telemetry.enabled:
            sink = CountingSink(sink, telemetry)
        if clients is None:  # NSP_DRIFT_ESTATE (live clients were built above)
            clients = wiring.estate_clients(settings.estate_path, telemetry)
    except BaseException:
        if live is not None:  # a context that is not built leaves no session behind
            runtime.run(live.close(), timeout=30)
        raise
    pipeline = Pipeline(
        store=store,
        outbox=sink,
        enqueue=queue.send,
        config=settings.rules,
        scope=Scope(settings.subscriptions),
        window_seconds=settings.coalesce_seconds,
        enqueue_work=queue.send_work,
        budget_seconds=settings.invocation_budget_seconds,
        verify_sweeps=settings.membership_verify_sweeps,
    )
    intervals = sweep_intervals(settings.sweep_schedules)
    return AppContext(settings, store, pipeline, queue, clients, dispatcher, telemetry, sweep_intervals=intervals)


def sweep_intervals(schedules: Any) -> dict[str, float]:
    """The watched sweeps' intervals from their NCRONTAB settings. A schedule nsp-drift cannot read
    is logged (one line naming the setting) and that sweep is not watched: never a reason to stop
    the other functions (the host refuses a bad timer schedule itself)."""
    from shared.service.heartbeat import ScheduleError, intervals_from

    intervals: dict[str, float] = {}
    for pair in schedules:
        try:
            intervals.update(intervals_from([pair]))
        except ScheduleError as exc:
            log.error("sweep heartbeat: %s; that sweep is not watched", exc)
    return intervals


def _delivery(store: Any, budget_seconds: float, telemetry: Telemetry) -> tuple[TransitionSink, Any]:
    """The outbox and its dispatcher when destinations are configured, else a logging sink."""
    from shared import wiring
    from shared.adapters.notify.destinations import DestinationError, load_destinations
    from shared.service.dispatch import Dispatcher, OutboxSink

    try:
        destinations = load_destinations()
        if not destinations:
            return LoggingSink(), None
        senders, digests = wiring.senders(destinations, telemetry=telemetry)
    except DestinationError as exc:
        raise SettingsError(str(exc)) from None
    return OutboxSink(store, destinations), Dispatcher(store, senders, digests, budget_seconds=budget_seconds)


def context(warm_up: bool = False) -> AppContext:
    """The process's context, built on first use. ``warm_up``: the invocation reads ARM (an
    evaluation), so the ARM clients start their SDK import and first token now, overlapping the
    context's build and the state reads (intake and the sweep timers read no ARM: they do not)."""
    global _context
    with _lock:
        if _context is None:
            from shared.core.notify.redact import install_log_redaction

            install_log_redaction()
            try:
                _context = build_context(load_settings(), warm_up=warm_up)
            except SettingsError as exc:
                log.error("nsp-drift is misconfigured: %s", exc)
                raise
        elif warm_up:
            start = getattr(_context.clients, "warm_up", None)
            if callable(start):
                start()  # once per process: a no-op after the first
        return _context


def reset_context(new: AppContext | None = None) -> None:
    """Tests and settings reloads: drop (or replace) the process-wide context."""
    global _context
    with _lock:
        _context = new


def handle_event(event: Any) -> None:
    from shared.entrypoints.binding import event_from_binding

    raw = event_from_binding(event)
    ctx = context()
    with ctx.telemetry.span(SPAN_INTAKE, [_correlation_id(raw)], event_id=str(raw.get("id") or "")):
        try:
            report = ctx.pipeline.intake([raw])
        except StoreUnavailable:
            log.error("state store unavailable: event %s will be retried by Event Grid", raw.get("id"))
            raise
    ctx.telemetry.events(report.accepted, report.duplicates, report.dropped)
    ctx.telemetry.windows_opened(report.windows_opened)
    log.info(
        "event %s: accepted=%d duplicates=%d windows_opened=%d dropped=%s",
        raw.get("id"),
        report.accepted,
        report.duplicates,
        report.windows_opened,
        dict(report.dropped),
    )


# host.json extensions.queues.maxDequeueCount: after this many failed attempts the host moves the
# message to the poison queue (tests/test_function_app.py keeps the two equal).
MAX_DEQUEUE_COUNT = 5


def handle_queue_message(body: str, dequeue_count: int) -> None:
    from shared.adapters.queue import decode_any
    from shared.core.changes import poison_transition
    from shared.core.notify.redact import redact
    from shared.core.work import Work

    try:
        item, _ = decode_any(body)
    except ValueError as exc:
        # A malformed message can never succeed: log and acknowledge instead of poisoning.
        log.error("dropped malformed evaluation message: %s", exc)
        return
    started = time.monotonic()
    ctx = context(warm_up=True)
    if isinstance(item, Work):
        _handle_work(ctx, item, dequeue_count, started)
        return
    target = item
    try:
        with ctx.telemetry.span(SPAN_EVALUATE, target=target.key) as span:
            result = runtime.run(ctx.pipeline.evaluate_window(target, ctx.readers()))
            _annotate(span, result.correlation_ids)
    except Exception as exc:
        ctx.telemetry.evaluations("failed", "window")
        # Evaluation failures back off inside the pipeline; what arrives here could not even be
        # recorded (state store or queue unreachable): the runtime retries the message.
        reason = redact(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]
        log.error(
            "evaluation of %s failed (attempt %d/%d): %s", _describe(target), dequeue_count, MAX_DEQUEUE_COUNT, reason
        )
        if dequeue_count >= MAX_DEQUEUE_COUNT:
            # Last attempt: tell the operators once, then let the host move the message aside.
            ctx.pipeline.outbox.emit([poison_transition(target, reason, dequeue_count, QUEUE_NAME)])
            _record_poisoned(ctx, target, reason, dequeue_count)
        raise
    ctx.telemetry.evaluations(result.status.value, "window")
    if result.status is WindowStatus.RETRY:
        log.error(
            "evaluation of %s failed (%d in a row): %s; retrying in %.0f s",
            _describe(target),
            result.attempts,
            result.error,
            result.retry_in,
        )
    report = deliver(ctx.dispatcher, outbox=ctx.pipeline.outbox, transitions=result.transitions)
    if report is not None:
        log.info("delivered %d, retrying %d, failed %d", report.sent, report.retried, report.failed)
        _observe_backlog(ctx)
    log.info(
        "evaluated %s (attempt %d): %s, %d account(s), %d transition(s) in %.2fs",
        _describe(target),
        dequeue_count,
        result.status.value,
        result.accounts,
        len(result.transitions),
        time.monotonic() - started,
    )


def _handle_work(ctx: AppContext, work: Any, dequeue_count: int, started: float) -> None:
    """A batch of accounts or a sweep page. A failure that escapes (store or queue unreachable)
    raises: the queue redelivers the message and the batch is redone (idempotent)."""
    with ctx.telemetry.span(SPAN_EVALUATE, work=work.kind.value) as span:
        result = runtime.run(ctx.pipeline.run_work(work, ctx.readers()))
        _annotate(span, correlation_ids_of(result.transitions))
    kind = work.kind.value
    ctx.telemetry.evaluations("done", kind, result.evaluated)
    ctx.telemetry.evaluations("failed", kind, len(result.failed))
    ctx.telemetry.evaluations("deferred", kind, result.deferred)
    report = deliver(ctx.dispatcher, outbox=ctx.pipeline.outbox, transitions=result.transitions)
    if report is not None:
        log.info("delivered %d, retrying %d, failed %d", report.sent, report.retried, report.failed)
        _observe_backlog(ctx)
    log.info(
        "work %s from %s (attempt %d): %d evaluated, %d transition(s), %d deferred, %d failed, %d message(s) "
        "queued in %.2fs",
        work.kind.value,
        work.origin or "-",
        dequeue_count,
        result.evaluated,
        len(result.transitions),
        result.deferred,
        len(result.failed),
        result.queued,
        time.monotonic() - started,
    )


def handle_sweep(past_due: bool = False, full: bool = True) -> None:
    """The timer only plans: one message per subscription, which lists and queues batches. Then
    the heartbeat: this sweep completed (resolving its alert), and a sweep that has not completed
    within twice its schedule raises its one alert (shared.service.heartbeat)."""
    ctx = context()
    try:
        _sweep(ctx, past_due, full)
    except BaseException:
        _heartbeat(ctx, None)  # the other sweep may have gone stale, and this one with it
        raise
    _heartbeat(ctx, "full" if full else "sweep")


def _sweep(ctx: AppContext, past_due: bool, full: bool) -> None:
    if past_due:
        log.warning("reconciliation sweep is running late")
    if ctx.pipeline.enqueue_work is not None:
        report = runtime.run(ctx.pipeline.plan_sweep(ctx.settings.subscriptions, full))
    else:
        report = runtime.run(ctx.pipeline.sweep(ctx.settings.subscriptions, ctx.readers(), use_graph=not full))
    log.info(
        "sweep: %d account(s), %d transition(s), %d failure(s), %d partial, %d window(s) re-queued, "
        "%d window(s) backing off",
        report.accounts,
        report.transitions,
        len(report.failed),
        len(report.partial),
        report.requeued,
        report.backing_off,
    )
    if report.backing_off:
        log.warning("%d target(s) keep failing to evaluate and are backing off", report.backing_off)
    sent = deliver(ctx.dispatcher, include_digests=True)
    if sent is not None:
        _observe_backlog(ctx, force=True)
        log.info(
            "sweep deliveries: %d sent, %d digest(s), %d retrying, %d failed",
            sent.sent,
            sent.digests,
            sent.retried,
            sent.failed,
        )
    # Event Grid stops redelivering after 24 h: ids older than two days can go.
    ctx.store.purge_events(time.time() - 2 * 86400)


def _observe_backlog(ctx: AppContext, force: bool = False) -> None:
    """Set the outbox gauges (pending deliveries, age of the oldest) from the store. Telemetry
    only: a failure to read is logged, never raised (the deliveries themselves are done)."""
    now = time.monotonic()
    if not ctx.telemetry.enabled or (not force and now - ctx.backlog_seen_at < ctx.backlog_interval):
        return
    ctx.backlog_seen_at = now
    from shared.core.notify.base import DeliveryStatus

    try:
        pending = cast(StatusStore, ctx.store).list_deliveries(DeliveryStatus.PENDING)
    except Exception as exc:
        log.warning("outbox backlog not measured: %s", type(exc).__name__)
        return
    oldest = min((d.created_at for d in pending), default=None)
    ctx.telemetry.backlog(len(pending), 0.0 if oldest is None else time.time() - oldest)


def _correlation_id(raw: Any) -> str:
    """The Azure operation's correlation id of a raw event (both schemas keep it in ``data``)."""
    data = raw.get("data") if isinstance(raw, dict) else None
    value = data.get("correlationId") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _annotate(span: Any, correlation_ids: Any) -> None:
    """Correlation ids known only once the window is claimed (the events it coalesced)."""
    ids = [c for c in dict.fromkeys(correlation_ids) if c]
    if span is not None and ids:
        from shared.adapters.telemetry import CORRELATION_ID, CORRELATION_IDS

        span.set_attribute(CORRELATION_ID, ids[0])
        span.set_attribute(CORRELATION_IDS, ids)


def _heartbeat(ctx: AppContext, completed: str | None) -> None:
    """Record a completed sweep and look at every watched one. A failure here is logged: it must
    neither fail a sweep that did its work nor hide the error of one that did not."""
    from typing import cast

    from shared.core.state.base import StatusStore
    from shared.service.heartbeat import check_heartbeats, sweep_completed
    from shared.service.status import prune_poisoned

    store = cast(StatusStore, ctx.store)
    now = ctx.pipeline.clock()
    try:
        if completed is not None:
            interval = ctx.sweep_intervals.get(completed, 0.0)
            sweep_completed(store, ctx.pipeline.outbox, completed, interval, now)
            prune_poisoned(store)
        check_heartbeats(store, ctx.pipeline.outbox, ctx.sweep_intervals, now)
    except Exception as exc:
        log.error("sweep heartbeat not recorded: %s", _one_line(exc))


def _record_poisoned(ctx: AppContext, target: Target, reason: str, attempts: int) -> None:
    """Best effort, for the status: the store is often what failed."""
    from typing import cast

    from shared.core.state.base import PoisonRecord, StatusStore

    try:
        cast(StatusStore, ctx.store).record_poisoned(PoisonRecord(target, reason, attempts, ctx.pipeline.clock()))
    except Exception as exc:
        log.error("poisoned evaluation of %s not recorded for the status: %s", _describe(target), _one_line(exc))


def _one_line(exc: BaseException) -> str:
    from shared.core.notify.redact import redact

    return redact(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]


def handle_status() -> tuple[int, dict[str, Any]]:
    """``GET /api/status``: (HTTP status, JSON body). The heartbeat looks first (a stale sweep
    raises its one alert from here too). Bad settings or store state: a clear error, never a crash."""
    from typing import cast

    from shared.adapters.state.codec import CodecError
    from shared.core.state.base import StatusStore
    from shared.service.heartbeat import check_heartbeats
    from shared.service.status import read_status, status_to_dict

    try:
        ctx = context()
    except SettingsError as exc:
        return 500, {"error": f"nsp-drift is misconfigured: {exc}"}
    store = cast(StatusStore, ctx.store)
    now = ctx.pipeline.clock()
    try:
        check_heartbeats(store, ctx.pipeline.outbox, ctx.sweep_intervals, now)
    except Exception as exc:  # the status still answers
        log.error("sweep heartbeat not checked: %s", _one_line(exc))
    try:
        status = read_status(store, ctx.sweep_intervals, now)
    except StoreUnavailable as exc:
        log.error("status: %s", _one_line(exc))
        return 503, {"error": f"state store unavailable: {_one_line(exc)}"}
    except CodecError as exc:
        log.error("status: %s", _one_line(exc))
        return 500, {"error": f"the state store holds a row nsp-drift cannot read: {_one_line(exc)}"}
    except Exception as exc:
        log.error("status failed: %s", _one_line(exc))
        return 500, {"error": f"status failed: {_one_line(exc)}"}
    return 200, status_to_dict(status)


def delivery_sink(store: Any, budget_seconds: float = 120.0) -> TransitionSink:
    """Where operator alerts go outside the function app (``nsp-drift status``): the outbox of the
    configured destinations, else the log."""
    return _delivery(store, budget_seconds, Telemetry.off())[0]


def _describe(target: Target) -> str:
    return f"{target.kind.value} {target.resource_id}"
