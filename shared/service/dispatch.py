"""The outbox and its dispatcher: every transition reaches each destination that wants it, once.

``OutboxSink`` is the pipeline's TransitionSink: it turns transitions into deliveries (one per
accepting destination) and stores them once the state write that makes them true succeeded (see
shared/service/pipeline.py, "Ordering"), with ids derived
from (destination, idempotency key) so a re-decided or re-evaluated transition maps to the same
row. ``Dispatcher`` sends what is due: it leases a delivery (conditional write) so two workers
never send it concurrently, sends it, then marks it done. A crash between send and mark-done
means the delivery is sent again after the lease: at-least-once, with the idempotency key
travelling as ``webhook-id`` (webhooks) or the task marker (work items, issues) so receivers
drop the repeat.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from shared.core.changes import Transition, transition_to_dict
from shared.core.notify.base import Delivery, DeliveryStatus, OutboxStore, Outcome, Sender
from shared.core.state.base import ConflictError

log = logging.getLogger(__name__)


class Route(Protocol):
    """What the outbox needs to know of a destination: its name and its routing."""

    @property
    def name(self) -> str: ...

    def accepts(self, transition: Mapping[str, Any]) -> bool: ...

    def is_digest(self, transition: Mapping[str, Any]) -> bool: ...


DigestSender = Callable[[Sequence[Delivery]], Outcome]


class OutboxSink:
    def __init__(self, store: OutboxStore, routes: Sequence[Route], clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.routes = routes
        self.clock = clock

    def emit(self, transitions: Sequence[Transition]) -> None:
        deliveries = self._deliveries(transitions, self.clock())
        if deliveries:
            added = self.store.add_deliveries(deliveries)
            log.info("outbox: %d delivery(ies) recorded, %d new", len(deliveries), added)

    def delivery_ids(self, transitions: Sequence[Transition]) -> list[str]:
        """The ids of the immediate (not quiet-mode) deliveries ``emit`` records for these
        transitions: what an evaluation hands its own dispatch run (``Dispatcher.dispatch_due``)."""
        return [d.delivery_id for d in self._deliveries(transitions, 0.0) if not d.digest]

    def _deliveries(self, transitions: Sequence[Transition], now: float) -> list[Delivery]:
        deliveries = []
        for transition in transitions:
            payload = transition_to_dict(transition)
            for route in self.routes:
                if route.accepts(payload):
                    deliveries.append(
                        Delivery(
                            destination=route.name,
                            idempotency_key=transition.idempotency_key,
                            transition=payload,
                            created_at=now,
                            next_attempt_at=now,
                            digest=route.is_digest(payload),
                        )
                    )
        return deliveries


DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_BUDGET_SECONDS = 120.0
# A delivery waiting behind an earlier one of its finding is looked at again no later than this
# (the earlier one may be leased by a worker that is about to finish it).
BEHIND_RECHECK_SECONDS = 60.0
# An evaluation's dispatch run sends the deliveries it recorded itself and, of the backlog, only
# those recorded at least this long ago: a fresher one belongs to the (concurrent) invocation that
# recorded it and is about to send it. One whose invocation died is taken after this, or by the
# sweep's run, which takes everything due.
FRESH_SECONDS = 60.0


@dataclass
class DispatchReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    digests: int = 0
    skipped: int = 0  # leased by another worker meanwhile
    deferred: int = 0  # due, left for the next run because the time budget was used up
    held: int = 0  # due, left for a later run because their destination just failed retryably
    held_back: dict[str, int] = field(default_factory=dict)  # destination -> deliveries held
    behind: int = 0  # due, but an earlier delivery of the same finding to that destination is pending
    by_destination: dict[str, int] = field(default_factory=dict)


def backoff_seconds(attempts: int, retry_after: float | None) -> float:
    """Between dispatch runs: 30 s, 1 min, 2 min ... capped at 1 h, never sooner than asked."""
    delay = min(30.0 * 2.0 ** max(attempts - 1, 0), 3600.0)
    return max(delay, retry_after or 0.0)


@dataclass
class _Run:
    """One dispatch run: when it started, and the destinations it has stopped trying."""

    started: float
    held: dict[str, float] = field(default_factory=dict)  # destination -> not before (epoch s)
    seen: set[str] = field(default_factory=set)  # delivery ids already handled in this run


class Dispatcher:
    """Sends what is due, within a time budget, each delivery under a lease of its own.

    * A lease is ``lease_seconds`` from the clock *when it is taken* (just before its send), so
      however long a run has been going, no lease is already expired when written. It must
      outlast the longest single send: a task send makes up to four API calls, each with its own
      retry layer (about 40 s at worst), hence 300 s.
    * A run stops taking new deliveries once ``budget_seconds`` have passed since it started and
      leaves the rest due (unleased) for the next run, so an invocation ends well inside
      ``functionTimeout`` (host.json: 10 min): budget + the last send's lease < 10 min.
    * After a retryable failure (timeout, 429, 5xx) a destination is not tried again in the same
      run: its other due deliveries are held back until the failed one's next attempt, which keeps
      their order and keeps them from standing in front of other destinations' deliveries.
    * Order per finding: a delivery is not sent while an earlier delivery of the same finding to
      the same destination is pending (``OutboxStore.older_pending``; by occurrence, then opened <
      changed < resolved): a retried "opened" is never overtaken by its "resolved". The check is
      made before the lease is taken, and a delivery only becomes pending in order (the pipeline
      records a finding's transitions in the order of the state writes that make them true).
    * Immediate deliveries are read apart from quiet-mode (digest) ones, so a backlog of digest
      items never hides an alert; digests go out only when asked (``include_digests``: the sweep).
    """

    def __init__(  # noqa: PLR0913 - tuning knobs with defaults; callers name the one they set
        self,
        store: OutboxStore,
        senders: Mapping[str, Sender],
        digest_senders: Mapping[str, DigestSender] | None = None,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 10,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        batch: int = 100,
        budget_seconds: float = DEFAULT_BUDGET_SECONDS,
        digest_batch: int = 100,
        digest_limit: int = 1000,
    ) -> None:
        if budget_seconds <= 0 or lease_seconds <= 0:
            raise ValueError("budget_seconds and lease_seconds must be positive")
        self.store = store
        self.senders = senders
        self.digest_senders = digest_senders or {}
        self.clock = clock
        self.max_attempts = max_attempts
        self.lease = lease_seconds
        self.batch = batch
        self.budget = budget_seconds
        self.digest_batch = digest_batch  # transitions per digest message
        self.digest_limit = digest_limit  # digest items looked at per run

    # -- the run -------------------------------------------------------------------------------------

    def dispatch_due(self, include_digests: bool = False, recorded: Sequence[str] | None = None) -> DispatchReport:
        """Send what is due. ``recorded`` (an evaluation's run): the ids of the deliveries that
        invocation just recorded, sent first by id, and of the backlog only deliveries recorded at
        least FRESH_SECONDS ago (concurrent evaluations each read, and tried to lease, every other
        one's fresh deliveries: about 20 Table calls per evaluation in a storm). None (the sweep):
        everything due."""
        report = DispatchReport()
        run = _Run(started=self.clock())
        finished = self._dispatch_immediate(run, report, recorded)
        if include_digests and finished:
            self._dispatch_digests(run, report)
        if report.deferred:
            log.info(
                "dispatch: time budget of %.0f s used up; %d due delivery(ies) left for the next run",
                self.budget,
                report.deferred,
            )
        if report.held_back:
            log.warning(
                "dispatch: held back after a retryable failure: %s",
                ", ".join(f"{name} ({count})" for name, count in sorted(report.held_back.items())),
            )
        return report

    def _out_of_time(self, run: _Run) -> bool:
        return self.clock() - run.started >= self.budget

    def _dispatch_immediate(self, run: _Run, report: DispatchReport, recorded: Sequence[str] | None = None) -> bool:
        """The ``recorded`` deliveries, then batches of due immediate deliveries until none is
        left or the budget is used up. Returns False when the budget ran out."""
        created_before: float | None = None
        if recorded is not None:
            own = []
            for delivery_id in dict.fromkeys(recorded):
                found = self.store.get_delivery(delivery_id)
                if found is None or found[0].status is not DeliveryStatus.PENDING or found[0].digest:
                    continue  # recorded before (and sent), or quiet mode
                if found[0].next_attempt_at <= self.clock():  # else leased, or waiting for a retry
                    own.append(found)
            if not self._dispatch_items(own, run, report):
                return False
            created_before = self.clock() - FRESH_SECONDS
        while True:
            page = self.store.due_deliveries(self.clock(), self.batch, digest=False, created_before=created_before)
            due = [(d, e) for d, e in page if d.delivery_id not in run.seen]
            if not due:
                return True
            if not self._dispatch_items(due, run, report):
                return False
            if len(page) < self.batch:
                return True  # that was the whole backlog

    def _dispatch_items(self, due: Sequence[tuple[Delivery, str]], run: _Run, report: DispatchReport) -> bool:
        """Send each due immediate delivery (held, behind, leased elsewhere: skipped). False when
        the budget ran out (the rest are counted as deferred)."""
        for index, (item, etag) in enumerate(due):
            if self._out_of_time(run):
                report.deferred += len(due) - index
                return False
            run.seen.add(item.delivery_id)
            if item.digest:  # a store must not return these here; never send one alone
                continue
            if item.destination in run.held:
                self._hold(item, etag, run.held[item.destination], report)
                continue
            if self._behind(item, etag, report):
                continue
            leased = self._lease(item, etag)
            if leased is None:
                report.skipped += 1
                continue
            delivery, lease_etag = leased
            sender = self.senders.get(delivery.destination)
            if sender is None:
                outcome = Outcome(ok=False, error=f"destination {delivery.destination!r} is no longer configured")
            else:
                outcome = _safe_send(sender.send, delivery, self.store)
            final = self._settle(delivery, lease_etag, outcome, self.clock(), report)
            self._maybe_hold_destination(run, delivery.destination, outcome, final)
        return True

    def _dispatch_digests(self, run: _Run, report: DispatchReport) -> None:
        due = self.store.due_deliveries(self.clock(), self.digest_limit, digest=True)
        by_destination: dict[str, list[tuple[Delivery, str]]] = defaultdict(list)
        for item, etag in due:
            if item.digest and item.delivery_id not in run.seen:
                by_destination[item.destination].append((item, etag))
        left = sum(len(items) for items in by_destination.values())
        for destination, items in by_destination.items():
            for start in range(0, len(items), max(self.digest_batch, 1)):
                chunk = items[start : start + max(self.digest_batch, 1)]
                if self._out_of_time(run):
                    report.deferred += left
                    return
                left -= len(chunk)
                if destination in run.held:
                    for item, etag in chunk:
                        self._hold(item, etag, run.held[destination], report)
                    continue
                self._dispatch_digest(run, destination, chunk, report)

    # -- one delivery / one digest ---------------------------------------------------------------------

    def _lease(self, delivery: Delivery, etag: str) -> tuple[Delivery, str] | None:
        # From the clock now, not when the run or the batch began: the lease covers this send.
        leased = replace(delivery, attempts=delivery.attempts + 1, next_attempt_at=self.clock() + self.lease)
        try:
            return leased, self.store.update_delivery(leased, etag)
        except ConflictError:
            return None  # another worker has it

    def _behind(self, delivery: Delivery, etag: str, report: DispatchReport) -> bool:
        """Whether an earlier delivery of the same finding to the same destination is pending; if
        so this one waits for it (until its next attempt, or a minute, whichever is sooner)."""
        earlier = self.store.older_pending(delivery)
        if earlier is None:
            return False
        report.behind += 1
        now = self.clock()
        until = min(earlier.next_attempt_at, now + BEHIND_RECHECK_SECONDS)
        if until > delivery.next_attempt_at:
            with contextlib.suppress(ConflictError):  # another worker has it: it makes the same check
                self.store.update_delivery(replace(delivery, next_attempt_at=until), etag)
        return True

    def _hold(self, delivery: Delivery, etag: str, until: float, report: DispatchReport) -> None:
        """Leave a delivery for a later run (its destination is failing); attempts are not spent."""
        if delivery.next_attempt_at >= until:
            return
        try:
            self.store.update_delivery(replace(delivery, next_attempt_at=until), etag)
        except ConflictError:
            report.skipped += 1  # another worker took it meanwhile
            return
        report.held += 1
        report.held_back[delivery.destination] = report.held_back.get(delivery.destination, 0) + 1

    def _maybe_hold_destination(self, run: _Run, destination: str, outcome: Outcome, final: Delivery) -> None:
        if outcome.ok or not outcome.retryable:
            return  # a permanent refusal is about that delivery, not the destination
        if final.status is DeliveryStatus.PENDING:
            until = final.next_attempt_at  # the others go no sooner than the failed one: order is kept
        else:  # out of attempts: still a failing destination
            until = self.clock() + backoff_seconds(1, outcome.retry_after)
        run.held[destination] = max(run.held.get(destination, 0.0), until)

    def _settle(self, delivery: Delivery, etag: str, outcome: Outcome, now: float, report: DispatchReport) -> Delivery:
        if outcome.task is not None:
            self.store.put_task(outcome.task)
        if outcome.ok:
            final = replace(delivery, status=DeliveryStatus.DONE, last_status=outcome.status, last_error="")
            report.sent += 1
            report.by_destination[delivery.destination] = report.by_destination.get(delivery.destination, 0) + 1
        elif outcome.retryable and delivery.attempts < self.max_attempts:
            final = replace(
                delivery,
                next_attempt_at=now + backoff_seconds(delivery.attempts, outcome.retry_after),
                last_status=outcome.status,
                last_error=outcome.error,
            )
            report.retried += 1
        else:
            final = replace(
                delivery, status=DeliveryStatus.FAILED, last_status=outcome.status, last_error=outcome.error
            )
            report.failed += 1
            log.error(
                "delivery to %s failed for good (status %s): %s",
                delivery.destination,
                outcome.status,
                outcome.error,
            )
        try:
            self.store.update_delivery(final, etag)
        except ConflictError:
            log.warning("delivery %s changed under us; it will be looked at again", delivery.delivery_id)
        return final

    def _dispatch_digest(
        self, run: _Run, destination: str, items: list[tuple[Delivery, str]], report: DispatchReport
    ) -> None:
        leased = []
        for item, etag in items:
            run.seen.add(item.delivery_id)
            if self._behind(item, etag, report):
                continue
            taken = self._lease(item, etag)
            if taken is None:
                report.skipped += 1
            else:
                leased.append(taken)
        if not leased:
            return
        sender = self.digest_senders.get(destination)
        if sender is None:
            outcome = Outcome(ok=False, error=f"destination {destination!r} has no digest sender")
        else:
            try:
                outcome = sender([d for d, _ in leased])
            except Exception as exc:  # a sender bug must not lose the batch: retry later
                log.exception("digest sender for %s raised", destination)
                outcome = Outcome(ok=False, retryable=True, error=f"digest sender raised {type(exc).__name__}")
        report.digests += 1 if outcome.ok else 0
        finals = [self._settle(delivery, etag, outcome, self.clock(), report) for delivery, etag in leased]
        self._maybe_hold_destination(run, destination, outcome, finals[0])


def _safe_send(send: Callable[[Delivery, Any], Outcome], delivery: Delivery, tasks: Any) -> Outcome:
    try:
        return send(delivery, tasks)
    except Exception as exc:  # never let one destination's bug stop the others
        log.exception("sender for %s raised", delivery.destination)
        return Outcome(ok=False, retryable=True, error=f"sender raised {type(exc).__name__}")
