"""The event pipeline: separate steps with explicit ports.

Ports: every step takes what it touches, and keeps nothing between calls.

- ``readers`` (``Readers``, an argument of each step that reads ARM): storage accounts, what a
  perimeter/VM/backup target stands for, Resource Graph summaries. The shell builds a fresh set
  per invocation (``shared.wiring.readers_for``), so their lookup caches live for one run.
- ``store`` (``StateStore``): account and profile state, coalescing windows and their leases,
  processed event ids.
- ``outbox`` (``TransitionSink``): where transitions go (``shared.service.dispatch.OutboxSink``).
- ``enqueue``: the evaluation queue's send (target, delay in seconds).
- ``clock``: epoch seconds. Leases and back-offs are computed from it when they are taken.

``Pipeline`` is a frozen bundle of those ports and the policy (rules, scope, window, lease);
the function app, the CLI's ``replay`` and the tests drive the same steps:

- ``intake``: parse events, map them to targets, drop what is out of scope, open or join each
  target's coalescing window; a window owed a queue message gets it (again, if a send failed).
- ``evaluate_window``: lease a target's window, resolve it to storage accounts, evaluate each
  (``evaluate_account``: gather, decide, commit) and only then mark the window done. A failed or
  partial evaluation backs off (30 s doubling to a day) and tells the operators once.
- ``sweep``: re-evaluate every account in scope (or those whose Resource Graph summary,
  VHD VMs or blob backups changed)
  and re-queue windows nobody takes care of (lapsed lease, lost message).
- ``deliver``: hand what is due to the dispatcher.

Ordering, per account or profile row (and why it is safe under crashes and concurrency):

1. Read the stored row (version V) *before* reading ARM. Its ``pending_transitions`` (carried by a
   writer that may have vanished before recording them) are recorded into the outbox first.
2. Read ARM, decide (pure) against the row as of V.
3. Write the new state *carrying* the transitions it makes true, conditionally on V. Every
   evaluation writes (an unchanged account still records its new ``observed_at``), so V changing
   means some evaluation committed after this read began: the write fails and this evaluation
   reads ARM again instead of applying an older read over a newer one. Profiles are ordered by
   ARM's own ``accessRulesVersion`` instead: an older version is never written.
4. Only then record the transitions in the outbox, then clear them from the row (conditionally;
   a newer writer recorded them in its step 1 before overwriting them).

So nothing reaches the outbox before the write that makes it true has succeeded, and the outbox
record is durable together with that write (it is in the row): a crash after 3 leaves them for
the next reader of the row (the window's lease lapses, so its re-evaluation is one), a crash after
4 records them again, which is a no-op (delivery ids derive from the transition). An account that
is gone becomes a tombstone (shared.core.drift) that carries its resolutions the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from shared.core import arm_ids
from shared.core.changes import (
    EVALUATION_FAILING_RULE,
    PERIMETER_ASSOCIATION_CHANGED_RULE,
    PERIMETER_RULES_CHANGED_RULE,
    ChangeEvent,
    Provenance,
    Target,
    TargetKind,
    Transition,
    TransitionKind,
)
from shared.core.config import RulesConfig
from shared.core.drift import decide_account, decide_profile, profile_state_of
from shared.core.evaluate import evaluate
from shared.core.events import EventError, parse_event
from shared.core.membership import VERIFY_SWEEPS, needs_verify, sweep_round
from shared.core.model import AccountNotFound, Evaluation, PerimeterView, StorageAccountSnapshot
from shared.core.rules import judged_by as rules_judged_by
from shared.core.state import carried, pending
from shared.core.state.base import (
    AccountState,
    ConflictError,
    PendingMarker,
    ProfileState,
    StateStore,
    Versioned,
    WindowBusy,
)
from shared.core.state.pending import backoff_seconds
from shared.core.targeting import Scope, targets_for
from shared.core.work import BATCH_ACCOUNTS, Work, WorkKind, batches

if TYPE_CHECKING:
    from shared.core.summary import AccountSummary, GraphInventory

log = logging.getLogger(__name__)

_MAX_CONFLICT_RETRIES = 5  # profile writes lost to a concurrent writer
_MAX_READS = 3  # account reads per evaluation when newer evaluations keep committing first

# host.json functionTimeout is 10 minutes: a live evaluation never outlasts its lease.
LEASE_SECONDS = 660.0
# Failed evaluations of one window before the operators are told (once), as maxDequeueCount.
ALERT_AFTER_FAILURES = 5

# Which findings an evaluation may open or resolve depends on what caused it: each rule says
# which change kinds may judge it (``Rule.judged_by``, asked through ``shared.core.rules.judged_by``),
# and the perimeter pseudo-rules say which may report association and access-rule changes.

# Rules whose evidence lives on other resources -> the feature read that fetches it
# (ArmReader.read_account's ``skip``). A storage account *event* (an ACCOUNT window) leaves them
# to their own change kinds (VIRTUAL_MACHINE, BACKUP_INSTANCE events) and to the sweeps, which
# read everything: it reads neither the subscription's VM list nor the account's backup instances
# (and their policies), and carries the stored findings and references of these rules forward,
# as a perimeter change does for the non-perimeter rules. Only when the stored state stands on a
# read of them (``AccountState.linked_evidence``): a first evaluation, a recreated account (a
# tombstone), an account whose last read found it outside every perimeter or failed to read them
# reads them. A deleted account resolves everything, as before.
LINKED_READS: dict[str, str] = {"unmanaged-disk": "virtualMachines", "azure-backup": "backupInstances"}


# -- ports ------------------------------------------------------------------------------------------


class TransitionSink(Protocol):
    def emit(self, transitions: Sequence[Transition]) -> None: ...


class CollectingSink:
    """Keeps transitions in memory (replay, tests)."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    def emit(self, transitions: Sequence[Transition]) -> None:
        self.transitions.extend(transitions)


Enqueue = Callable[[Target, float], None]
EnqueueWork = Callable[[Work, float], None]
Clock = Callable[[], float]

# Default of NSP_DRIFT_INVOCATION_BUDGET_SECONDS: no invocation starts new work after this long.
INVOCATION_BUDGET_SECONDS = 120.0
_VAULT_TYPE = "/providers/microsoft.keyvault/vaults/"


class AccountReader(Protocol):
    async def read_account(self, account_id: str, skip: Collection[str] = ()) -> StorageAccountSnapshot:
        """Raises shared.core.model.AccountNotFound when the account is gone. ``skip``: feature reads to
        leave out (named in ``snapshot.not_read`` if it would have made them)."""
        ...

    async def list_account_ids(self, subscription_id: str) -> list[str]: ...


class TargetResolver(Protocol):
    async def perimeter_storage_accounts(self, perimeter_id: str) -> list[str]: ...

    async def vm_vhd_account_names(self, vm_id: str) -> list[str]: ...

    async def backup_datasource(self, instance_id: str) -> str | None: ...


class SummaryReader(Protocol):
    async def account_summaries(self, subscriptions: Sequence[str]) -> list[AccountSummary]: ...

    async def inventory(self, subscriptions: Sequence[str]) -> GraphInventory:
        """Accounts, VMs with VHDs and blob backup instances (shared.adapters.resource_graph)."""
        ...


@dataclass(frozen=True)
class Readers:
    """What the steps read ARM through, for one invocation."""

    accounts: AccountReader
    targets: TargetResolver
    summaries: SummaryReader | None = None  # Resource Graph (the frequent sweep)


@dataclass(frozen=True)
class Listed:
    """A storage account as the full sweep's list page returned it (its body, when the page was
    read, which perimeters of the subscription associate it, the sweep's verification round)."""

    body: Mapping[str, Any]
    at: float
    associated: Mapping[str, Any]
    round: int
    sweeps: int


class Deliverer(Protocol):
    def dispatch_due(self, include_digests: bool = False, recorded: Sequence[str] | None = None) -> Any: ...


# -- results -----------------------------------------------------------------------------------------


@dataclass
class IntakeReport:
    accepted: int = 0
    duplicates: int = 0
    windows_opened: int = 0  # queue messages sent for windows (a re-sent one counts again)
    absorbed: int = 0  # accepted without a write: an open window already names its actor and operation
    dropped: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AccountResult:
    account_id: str
    transitions: tuple[Transition, ...] = ()
    partial: tuple[str, ...] = ()  # what could not be read (the evaluation is partial if any)
    gone: bool = False


class WindowStatus(enum.StrEnum):
    DONE = "done"  # evaluated, results stored, window deleted (or turned into its follow-up)
    RETRY = "retry"  # failed or partial: backing off, a retry is queued
    BUSY = "busy"  # leased by another worker or backing off: this message was put back for later
    NONE = "none"  # no window (a duplicate message of one already evaluated)
    TAKEN = "taken"  # this worker's lease lapsed and another took the window over


@dataclass(frozen=True)
class WindowResult:
    target: Target
    status: WindowStatus
    transitions: tuple[Transition, ...] = ()
    accounts: int = 0
    partial: tuple[str, ...] = ()  # accounts read partially
    error: str = ""  # why the evaluation failed (redacted, one line)
    attempts: int = 0  # failed evaluations of this window so far
    retry_in: float = 0.0  # seconds until the message put back (RETRY, BUSY) becomes visible
    correlation_ids: tuple[str, ...] = ()  # of the events the window coalesced (telemetry's spans)


@dataclass
class WorkResult:
    """What one work message did (``Pipeline.run_work``)."""

    work: Work
    evaluated: int = 0  # accounts whose evaluation committed
    transitions: tuple[Transition, ...] = ()
    deferred: int = 0  # not started inside the budget: re-queued at once
    failed: tuple[str, ...] = ()  # failed or read partially: re-queued with back-off
    queued: int = 0  # work messages this invocation sent (batches, the next page, retries)
    listed: int = 0  # SWEEP: accounts on the page


@dataclass
class SweepReport:
    accounts: int = 0  # accounts evaluated
    listed: int = 0  # accounts in scope (listed by ARM or Resource Graph) plus stored ones
    unchanged: int = 0  # skipped by the graph sweep: summary digest equal to the stored one
    transitions: int = 0
    failed: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)  # accounts read partially (applied as far as read)
    requeued: int = 0  # windows nobody took care of, put back on the queue
    backing_off: int = 0  # windows whose evaluations keep failing (the operators' count)


def provenance_of(event: ChangeEvent) -> Provenance:
    return Provenance(
        event_ids=(event.event_id,),
        actors=(event.actor,),
        operation_names=(event.operation_name,) if event.operation_name else (),
        correlation_ids=(event.correlation_id,) if event.correlation_id else (),
        event_times=(event.event_time,) if event.event_time else (),
    )


def failing_transition(marker: PendingMarker, reason: str, attempts: int, retry_in: float) -> Transition:
    """The one alert for a window whose evaluations keep failing (keyed on the window)."""
    target = marker.target
    return Transition(
        kind=TransitionKind.OPENED,
        rule_id=EVALUATION_FAILING_RULE.id,
        resource_id=target.resource_id,
        perimeter_id=None,
        severity=EVALUATION_FAILING_RULE.severity.label,
        title=EVALUATION_FAILING_RULE.title,
        summary=f"Evaluation of {target.kind.value} {target.resource_id} failed {attempts} time(s) in a row: "
        f"{reason}. Retrying with back-off (next in {retry_in:.0f} s, doubling up to a day); "
        "changes to it are not reported until an evaluation succeeds.",
        key=f"failing|{target.key}|{marker.first_seen!r}",
        evidence={"target": target.key, "reason": reason, "attempts": attempts, "retryInSeconds": round(retry_in)},
        provenance=Provenance(event_ids=marker.provenance.event_ids, source="sweep"),
    )


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")


def _reason(exc: BaseException) -> str:
    from shared.core.notify.redact import redact

    return redact(" ".join(f"{type(exc).__name__}: {exc}".split()))[:300]  # one line


def deliver(
    dispatcher: Deliverer | None,
    include_digests: bool = False,
    outbox: TransitionSink | None = None,
    transitions: Sequence[Transition] | None = None,
) -> Any:
    """The deliver step: send what the outbox holds that is due (None without destinations).
    After an evaluation (``transitions`` it recorded in ``outbox``): its own deliveries first, by
    id, and only the backlog others left (``Dispatcher.dispatch_due``'s ``recorded``)."""
    if dispatcher is None:
        return None
    ids_of = getattr(outbox, "delivery_ids", None)
    if transitions is None or not callable(ids_of):
        return dispatcher.dispatch_due(include_digests=include_digests)
    return dispatcher.dispatch_due(include_digests=include_digests, recorded=ids_of(transitions))


@dataclass(frozen=True)
class Pipeline:
    store: StateStore
    outbox: TransitionSink
    enqueue: Enqueue
    config: RulesConfig
    scope: Scope
    window_seconds: float = 30.0
    clock: Clock = time.time
    lease_seconds: float = LEASE_SECONDS
    alert_after: int = ALERT_AFTER_FAILURES
    concurrency: int = 8
    # Fan-out: where batches and sweep pages go (None: everything runs in this process, the CLI).
    enqueue_work: EnqueueWork | None = None
    budget_seconds: float = INVOCATION_BUDGET_SECONDS
    batch_size: int = BATCH_ACCOUNTS
    # NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS: the full sweep verifies every account's membership within
    # this many sweeps (shared.core.membership).
    verify_sweeps: int = VERIFY_SWEEPS

    # -- intake --------------------------------------------------------------------------------------
    def intake(self, raw_events: Iterable[Mapping[str, Any]]) -> IntakeReport:
        """Bad events are logged and counted; they never stop the others. Store and queue
        failures raise: the runtime must retry the delivery rather than lose it."""
        report = IntakeReport()
        for raw in raw_events:
            try:
                event = parse_event(raw)
            except EventError as exc:
                log.warning("dropped malformed event: %s", exc)
                report.errors.append(str(exc))
                report.dropped["malformed"] += 1
                continue
            self._intake_one(event, report)
        return report

    def _intake_one(self, event: ChangeEvent, report: IntakeReport) -> None:
        """Per target, the window is read first (one read is all most events of a storm cost):

        - the event is already in it (a re-delivery): nothing, unless the window's message was
          never confirmed sent (``pending.owes_message``): then it is sent again;
        - it is open and not leased and the event adds no actor or operation (``pending.absorbs``):
          nothing is written; the window's evaluation claims it and reads ARM after this read, so
          the change is covered. A re-delivery of an absorbed event is absorbed again, or, once the
          window is gone, opens one: at worst one quiet re-evaluation;
        - otherwise (it opens a window, joins a leased one's ``later``, or adds someone or
          something new) the processed-events table is checked first, the window written, its
          message sent if owed, and the event recorded once the windows hold it."""
        decision = targets_for(event, self.scope)
        if decision.dropped:
            log.info("event %s dropped: %s", event.event_id, decision.dropped)
            report.dropped[decision.category] += 1
            return
        provenance = provenance_of(event)
        now = self.clock()
        seen: bool | None = None  # the events table, read at most once, only when a write needs it
        wrote = absorbed = duplicate = False
        for target in decision.targets:
            current = self.store.get_pending(target)
            if current is not None and pending.holds_event(current, provenance):
                if pending.owes_message(current, provenance):  # its first delivery's send failed
                    self._send_window(target, now, current, report)
                    wrote = True
                else:
                    duplicate = True
                continue
            if current is not None and pending.absorbs(current, provenance):
                absorbed = True
                continue
            if seen is None:
                seen = bool(self.store.seen_events([event.event_id]))
            if seen:
                duplicate = True
                continue
            joined = self.store.put_pending(target, provenance, self.window_seconds, now, current)
            wrote = True
            if joined.owes_message:
                # A failed send raises here, before the event is recorded: Event Grid delivers it
                # again, it is in the window, which still owes its message, and sends it.
                self._send_window(target, now, joined.written, report)
        if wrote and not self.store.record_events([event.event_id]) and not absorbed:
            # Recorded only after the windows hold it and have their messages; already recorded: a
            # re-delivery that only re-sent a message, or raced its twin.
            wrote, duplicate = False, True
        if wrote or absorbed:
            report.accepted += 1
            report.absorbed += int(absorbed and not wrote)
        elif duplicate:
            log.info("event %s already processed (re-delivery)", event.event_id)
            report.duplicates += 1

    def _send_window(self, target: Target, now: float, written: PendingMarker | None, report: IntakeReport) -> None:
        self.enqueue(target, self.window_seconds)
        self.store.mark_queued(target, now, written)
        report.windows_opened += 1

    # -- evaluate a window -----------------------------------------------------------------------------
    async def evaluate_window(self, target: Target, readers: Readers) -> WindowResult:
        """Lease the target's window, evaluate it, then mark it done: deleted only now that the
        results are stored. If this worker vanishes, the lease lapses and the queue's redelivery
        (or the sweep) takes the window over. Failures back off; they do not raise (a store or
        queue failure does: the runtime retries the message)."""
        try:
            claim = await asyncio.to_thread(self.store.claim_pending, target, self.clock(), self.lease_seconds)
        except WindowBusy as busy:
            delay = max(busy.until - self.clock(), 0.0) + 1.0
            await asyncio.to_thread(self.enqueue, target, delay)  # look again when it is free
            log.info("%s; looking again in %.0f s", busy, delay)
            return WindowResult(target, WindowStatus.BUSY, retry_in=delay)
        if claim is None:
            log.info("no open window for %s (already evaluated)", target.key)
            return WindowResult(target, WindowStatus.NONE)

        deadline = self._deadline()
        accounts: list[str] = []
        results: list[AccountResult] = []
        deferred: list[str] = []
        try:
            accounts = await self.resolve(target, readers)
            inline, outcomes = await self._evaluate_or_fan_out(accounts, target, claim, readers, deadline)
        except Exception as exc:
            error = _reason(exc)
        else:
            results, deferred, error = _window_outcomes(inline, outcomes)
        transitions = tuple(t for r in results for t in r.transitions)
        partial = tuple(r.account_id for r in results if r.partial)
        error = error or _partial_read(results)
        if error:
            return await self._back_off(claim, error, transitions, len(accounts), partial)
        if deferred:  # sent before the window is done: a crash in between re-evaluates the window
            await self._fan_out(deferred, _window_fan_out(target, claim, readers))
        now = self.clock()
        if await asyncio.to_thread(self.store.complete_pending, claim, now, self.window_seconds):
            # Events joined while this evaluation ran: their window is open, and owed a message.
            await asyncio.to_thread(self.enqueue, target, self.window_seconds)
            await asyncio.to_thread(self.store.mark_queued, target, now)
        ids = claim.provenance.correlation_ids
        return WindowResult(target, WindowStatus.DONE, transitions, len(accounts), partial, correlation_ids=ids)

    async def _evaluate_or_fan_out(
        self, accounts: list[str], target: Target, claim: PendingMarker, readers: Readers, deadline: float | None
    ) -> tuple[list[str], list[AccountResult | BaseException | None]]:
        """The accounts evaluated here and their outcomes, or none when they are more than one
        invocation's share: then one message per batch, any worker takes them."""
        if self.enqueue_work is not None and len(accounts) > self.batch_size:
            await self._fan_out(accounts, _window_fan_out(target, claim, readers))
            return [], []
        outcomes = await self._evaluate_many(accounts, claim.provenance, readers, target.kind, deadline, window=True)
        return accounts, outcomes

    # -- fan-out: bounded invocations ------------------------------------------------------------------
    def _deadline(self) -> float | None:
        """When this invocation stops starting new work (None: in-process, nothing to bound)."""
        return None if self.enqueue_work is None else self.clock() + self.budget_seconds

    async def _evaluate_many(
        self,
        accounts: Sequence[str],
        provenance: Provenance,
        readers: Readers,
        cause: TargetKind,
        deadline: float | None,
        window: bool = False,
    ) -> list[AccountResult | BaseException | None]:
        """Evaluate accounts concurrently; one not started by ``deadline`` is None (re-queue it).
        ``window``: they stand for an event's window (see LINKED_READS), not a sweep's batch."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(account_id: str) -> AccountResult | None:
            async with gate:
                if deadline is not None and self.clock() >= deadline:
                    return None
                return await self.evaluate_account(account_id, provenance, readers, cause, event=window)

        return list(await asyncio.gather(*(one(a) for a in accounts), return_exceptions=True))

    async def _fan_out(self, accounts: Sequence[str], why: _FanOut, delay: float = 0.0, attempts: int = 0) -> int:
        """Send ``accounts`` as batch messages; a perimeter's Key Vault associations travel with
        them (read once, not once per batch). Returns the messages sent."""
        if self.enqueue_work is None:
            raise RuntimeError("fan-out needs a work queue")
        items = batches(list(accounts), why.cause, why.provenance, why.origin, why.members, self.batch_size)
        for item in items:
            await asyncio.to_thread(self.enqueue_work, replace(item, attempts=attempts), delay)
        return len(items)

    async def run_work(self, work: Work, readers: Readers) -> WorkResult:
        """One work message, inside the invocation budget: what it cannot start in time is
        re-queued at once, what fails is re-queued with back-off (never dropped). A store or queue
        failure raises: the queue redelivers the message, and re-evaluating is idempotent."""
        if work.kind is WorkKind.SWEEP:
            return await self._sweep_page(work, readers)
        remember = getattr(readers.accounts, "remember_members", None)
        if callable(remember):
            for perimeter_id, vaults in work.vault_members:
                remember(perimeter_id, vaults)
        accounts = work.accounts
        if work.since:  # only those not evaluated since (a full sweep's stored, unlisted accounts)
            accounts = tuple([a for a in accounts if not await self._seen_since(a, work.since)])
        deadline = self._deadline()
        outcomes = await self._evaluate_many(accounts, work.provenance, readers, work.cause, deadline)
        return await self._settle(replace(work, accounts=accounts), outcomes)

    async def _seen_since(self, account_id: str, since: float) -> bool:
        stored = await asyncio.to_thread(self.store.get_account, account_id)
        return stored is not None and stored.value.observed_at >= since

    async def _settle(self, work: Work, outcomes: Sequence[AccountResult | BaseException | None]) -> WorkResult:
        """After a batch's evaluations: what was not started is re-queued at once, what failed (or
        was read partially) with back-off and one alert after ``alert_after`` failures."""
        results: list[AccountResult] = []
        deferred: list[str] = []
        failed: list[str] = []
        reasons: list[str] = []
        for account, outcome in zip(work.accounts, outcomes, strict=True):
            if outcome is None:
                deferred.append(account)
            elif isinstance(outcome, AccountResult):
                results.append(outcome)
                if outcome.partial:  # applied as far as read; read again later
                    failed.append(account)
                    reasons.append(f"{arm_ids.account_name_of(account)}: partial read ({', '.join(outcome.partial)})")
            elif isinstance(outcome, Exception):
                failed.append(account)
                reasons.append(f"{arm_ids.account_name_of(account)}: {_reason(outcome)}")
            else:
                raise outcome
        why = _FanOut(work.cause, work.provenance, work.origin, work.members_of())
        queued = 0
        if deferred:
            queued += await self._fan_out(deferred, why, 0.0, work.attempts)
        if failed:
            attempts = work.attempts + 1
            delay = backoff_seconds(attempts)
            if attempts == self.alert_after:
                await asyncio.to_thread(self.outbox.emit, [_batch_failing(work, failed, reasons[0], attempts, delay)])
            log.warning(
                "%d account(s) of a batch from %s failed (%d in a row), retrying in %.0f s: %s",
                len(failed),
                work.origin,
                attempts,
                delay,
                reasons[0],
            )
            queued += await self._fan_out(failed, why, delay, attempts)
        transitions = tuple(t for r in results for t in r.transitions)
        evaluated = len(results)
        return WorkResult(work, evaluated, transitions, len(deferred), tuple(failed), queued)

    async def _back_off(
        self,
        claim: PendingMarker,
        error: str,
        transitions: tuple[Transition, ...],
        accounts: int,
        partial: tuple[str, ...],
    ) -> WindowResult:
        attempts = claim.attempts + 1
        now = self.clock()
        delay = backoff_seconds(attempts)
        alert = attempts >= self.alert_after and not claim.alerted
        if alert:  # true as soon as it happened: it needs no write to become so
            await asyncio.to_thread(self.outbox.emit, [failing_transition(claim, error, attempts, delay)])
        target = claim.target
        if not await asyncio.to_thread(self.store.release_pending, claim, now, now + delay, error, alert):
            log.warning("evaluation of %s failed after its lease was taken over: %s", target.key, error)
            return WindowResult(target, WindowStatus.TAKEN, transitions, accounts, partial, error, attempts)
        await asyncio.to_thread(self.enqueue, target, delay)
        await asyncio.to_thread(self.store.mark_queued, target, now)
        ids = claim.provenance.correlation_ids
        return WindowResult(target, WindowStatus.RETRY, transitions, accounts, partial, error, attempts, delay, ids)

    async def resolve(self, target: Target, readers: Readers) -> list[str]:
        """The storage accounts a target stands for: as ARM says now, plus as stored before."""
        if target.kind is TargetKind.ACCOUNT:
            return [target.resource_id]
        stored_key = target.resource_id
        found: list[str] = []
        if target.kind is TargetKind.PERIMETER:
            found = await readers.targets.perimeter_storage_accounts(target.resource_id)
        elif target.kind is TargetKind.VIRTUAL_MACHINE:
            names = await readers.targets.vm_vhd_account_names(target.resource_id)
            found = await self._account_ids_by_name(names, target.resource_id, readers)
        elif target.kind is TargetKind.BACKUP_INSTANCE:
            source = await readers.targets.backup_datasource(target.resource_id)
            found = [source] if source else []
        elif target.kind is TargetKind.KEY_VAULT:
            parsed = arm_ids.parse(target.resource_id)
            stored_key = parsed.name.lower() if parsed else target.resource_id.lower()
        stored = await asyncio.to_thread(self.store.accounts_for, target.kind, stored_key)
        return list({a.lower(): a for a in [*found, *stored]}.values())

    async def _account_ids_by_name(self, names: Sequence[str], near: str, readers: Readers) -> list[str]:
        if not names:
            return []
        wanted = {n.lower() for n in names}
        known = await asyncio.to_thread(self.store.all_account_ids)
        hits = {arm_ids.account_name_of(a).lower(): a for a in known if arm_ids.account_name_of(a).lower() in wanted}
        missing = wanted - set(hits)
        parsed = arm_ids.parse(near)
        if missing and parsed is not None:  # not seen before: list the VM's subscription once
            for account in await readers.accounts.list_account_ids(parsed.subscription):
                if arm_ids.account_name_of(account).lower() in missing:
                    hits[arm_ids.account_name_of(account).lower()] = account
        return list(hits.values())

    # -- evaluate one account: gather, decide, commit ------------------------------------------------
    async def evaluate_account(
        self,
        account_id: str,
        provenance: Provenance,
        readers: Readers,
        cause: TargetKind = TargetKind.ACCOUNT,
        listed: Listed | None = None,
        event: bool = False,
    ) -> AccountResult:
        """See "Ordering" above: the stored version is read before ARM is, and the commit is
        conditional on it; if another evaluation committed in between, ARM is read again.

        ``listed`` (the full sweep): the account's body from the list page stands for the read of
        the account, which was read *before* the stored row. So it is used only when the stored
        row's read began at least a lease (the longest an evaluation lives) before the page was
        listed, i.e. the stored read certainly ended before the list: never an older read over a
        newer one. Otherwise, and after a conflict, the account is read afresh.

        ``event``: an event's window caused it; for a storage account event the VM list and
        backup instances are not read when the stored state stands on a read of them
        (LINKED_READS)."""
        for attempt in range(_MAX_READS):
            stored = await asyncio.to_thread(self.store.get_account, account_id)
            read_started = self.clock()
            facts = stored.value.facts if stored is not None and not stored.value.is_tombstone else None
            linked = stored is not None and not stored.value.is_tombstone and stored.value.linked_evidence
            skip = tuple(LINKED_READS.values()) if event and cause is TargetKind.ACCOUNT and linked else ()
            read_listed = getattr(readers.accounts, "read_listed", None)
            older = stored is None or stored.value.observed_at <= (listed.at if listed else 0.0) - self.lease_seconds
            if listed is not None and attempt == 0 and older and callable(read_listed):
                member = stored is not None and not stored.value.is_tombstone and bool(stored.value.associations)
                verify = needs_verify(account_id, listed.body, listed.associated, member, listed.round, listed.sweeps)
                read_started = listed.at
                backups = stored.value.backup_instance_ids if stored is not None else ()
                try:
                    snapshot = await read_listed(listed.body, verify, backups)
                except AccountNotFound:
                    evaluation = None
                else:
                    evaluation = evaluate(snapshot, self.config, datetime.fromtimestamp(self.clock(), UTC).date())
            else:
                evaluation = await self.gather(account_id, readers.accounts, cause, facts, skip)
            try:
                read = _Read(account_id, stored, evaluation, read_started)
                transitions = await asyncio.to_thread(self._commit, read, provenance, cause, True)
            except ConflictError:
                log.info("%s was committed by a newer evaluation while this one read; reading again", account_id)
                forget = getattr(readers.accounts, "forget_cached_lookups", None)
                if callable(forget):
                    forget()  # the shared lookups may be as old as this read
                continue
            incomplete = evaluation.snapshot.incomplete if evaluation is not None else ()
            return AccountResult(account_id, tuple(transitions), tuple(incomplete), evaluation is None)
        raise ConflictError(f"{account_id}: newer evaluations kept committing first ({_MAX_READS} reads)")

    async def gather(
        self,
        account_id: str,
        reader: AccountReader,
        cause: TargetKind = TargetKind.ACCOUNT,
        facts: Mapping[str, str] | None = None,
        skip: Collection[str] = (),
    ) -> Evaluation | None:
        """Read what ``cause`` lets the evaluation judge: a perimeter change only the perimeter
        side (``ArmReader.read_perimeter_side``), anything else the whole account (but the
        feature reads in ``skip``: see LINKED_READS)."""
        perimeter_side = getattr(reader, "read_perimeter_side", None)
        try:
            if cause is TargetKind.PERIMETER and callable(perimeter_side):
                snapshot = await perimeter_side(account_id, facts)
            elif skip:
                snapshot = await reader.read_account(account_id, skip)
            else:
                snapshot = await reader.read_account(account_id)
        except AccountNotFound:
            return None
        return evaluate(snapshot, self.config, datetime.fromtimestamp(self.clock(), UTC).date())

    def _record(self, pending: Sequence[Mapping[str, Any]]) -> None:
        """Record transitions another writer carried in a row (it may have vanished before)."""
        if pending:
            self.outbox.emit(carried.transitions(pending))

    def _commit(self, read: _Read, provenance: Provenance, cause: TargetKind, emit: bool) -> list[Transition]:
        """Steps 1 (record), 3 (write, conditional on ``read.stored``) and 4 (record, clear) of the
        ordering. ConflictError: a newer evaluation committed since ``read.stored`` was read."""
        account_id, stored, evaluation = read.account_id, read.stored, read.evaluation
        if emit and stored is not None:
            self._record(stored.value.pending_transitions)
        previous = stored.value if stored is not None else None  # a tombstone too: drift reads it
        perimeter_aware = cause in PERIMETER_ASSOCIATION_CHANGED_RULE.judged_by
        decision = decide_account(
            previous, evaluation, provenance, _iso(self.clock()), _rules_judged(cause, evaluation), perimeter_aware
        )
        transitions = list(decision.transitions) if emit else []
        etag = stored.etag if stored is not None else None
        if decision.new_state is None:
            # Gone, with nothing to keep: shared.core.drift keeps a tombstone (which carries the
            # resolutions like any state) whenever something ever transitioned, so there is nothing
            # to record here either.
            if stored is not None:
                self.store.delete_account(account_id, stored.etag)
            if transitions:
                self.outbox.emit(transitions)
            return transitions
        new = replace(decision.new_state, observed_at=read.started, pending_transitions=carried.records(transitions))
        written = self.store.put_account(new, etag)
        if transitions:
            self.outbox.emit(transitions)
            with contextlib.suppress(ConflictError):  # a newer writer recorded them before overwriting
                self.store.put_account(replace(new, pending_transitions=()), written)
        if evaluation is not None and cause in PERIMETER_RULES_CHANGED_RULE.judged_by:
            for view in evaluation.snapshot.perimeters:
                transitions.extend(self._apply_profile(view, account_id, provenance, emit))
        return transitions

    def _apply_profile(
        self, view: PerimeterView, account_id: str, provenance: Provenance, emit: bool
    ) -> list[Transition]:
        """The same ordering for a perimeter profile, shared by all its accounts: whichever of
        them commits a newer ``accessRulesVersion`` first reports the change; the others find it
        stored and report nothing."""
        current = profile_state_of(view)
        for _ in range(_MAX_CONFLICT_RETRIES):
            stored = self.store.get_profile(view.perimeter_id, view.profile_name)
            previous = stored.value if stored is not None else None
            if emit and previous is not None:
                self._record(previous.pending_transitions)
            if previous is not None and not _newer_profile(previous, current):
                if emit and stored is not None and previous.pending_transitions:
                    self._clear_profile(previous, stored.etag)
                return []
            transitions = list(decide_profile(previous, current, account_id, provenance, self.config.params))
            transitions = transitions if emit else []
            if transitions:
                affected = self._profile_accounts(view, account_id)
                transitions = [replace(t, accounts=affected) for t in transitions]
            try:
                written = self.store.put_profile(
                    replace(current, pending_transitions=carried.records(transitions)),
                    stored.etag if stored is not None else None,
                )
            except ConflictError:
                continue  # lost to a concurrent writer: nothing was emitted; look again
            if transitions:
                self.outbox.emit(transitions)
                self._clear_profile(current, written)
            return transitions
        raise ConflictError(f"gave up on profile {view.profile_name} of {view.perimeter_id}")

    def _profile_accounts(self, view: PerimeterView, account_id: str) -> tuple[str, ...]:
        """The storage accounts a change of the profile's rules affects: those whose stored state
        associates them with the perimeter through this profile (read once per change), and the
        account whose evaluation saw the change."""
        profile = view.profile_name.lower()
        found = {account_id.lower(): account_id}
        for other in self.store.accounts_for(TargetKind.PERIMETER, view.perimeter_id):
            if other.lower() in found:
                continue
            stored = self.store.get_account(other)
            associations = stored.value.associations if stored is not None else ()
            if any(
                a.perimeter_id.lower() == view.perimeter_id.lower() and a.profile_name.lower() == profile
                for a in associations
            ):
                found[other.lower()] = other
        return tuple(sorted(found.values(), key=str.lower))

    def _clear_profile(self, state: ProfileState, etag: str) -> None:
        with contextlib.suppress(ConflictError):  # a newer writer recorded them before overwriting
            self.store.put_profile(replace(state, pending_transitions=()), etag)

    # -- baseline and sweep ------------------------------------------------------------------------
    def record_baseline(self, evaluations: Iterable[Evaluation]) -> int:
        """Store evaluations as the baseline without emitting anything (``scan --state``)."""
        count = 0
        for evaluation in evaluations:
            account_id = evaluation.snapshot.id
            for attempt in range(_MAX_CONFLICT_RETRIES):
                stored = self.store.get_account(account_id)
                scan = Provenance(source="scan")
                try:
                    self._commit(_Read(account_id, stored, evaluation, self.clock()), scan, TargetKind.ACCOUNT, False)
                except ConflictError:
                    if attempt == _MAX_CONFLICT_RETRIES - 1:
                        raise
                    continue
                break
            count += 1
        return count

    async def _changed_by_graph(
        self, subscriptions: Sequence[str], readers: Readers, report: SweepReport
    ) -> dict[str, str]:
        """Accounts whose Resource Graph summary differs from the stored state (or is new), perimeter
        accounts whose VMs with VHDs or blob backup instances differ from what their last evaluation
        saw (the ``vhd-vms`` and ``blob-backups`` queries), stored rows that still carry unrecorded
        transitions, and stored accounts no longer listed (gone: evaluating resolves them)."""
        if readers.summaries is None:
            raise ValueError("the graph sweep needs a Resource Graph reader")
        inventory = await readers.summaries.inventory(subscriptions)
        changed: dict[str, str] = {}
        for summary in inventory.accounts:
            stored = await asyncio.to_thread(self.store.get_account, summary.id)
            settled = stored is not None and not stored.value.pending_transitions
            live = stored.value if stored is not None and not stored.value.is_tombstone else None
            if settled and inventory.reason_to_evaluate(summary, live) is None:
                report.unchanged += 1
                continue
            changed[summary.id.lower()] = summary.id
        listed = {s.id.lower() for s in inventory.accounts}
        wanted = {s.lower() for s in subscriptions}
        for account in await asyncio.to_thread(self.store.all_account_ids):
            parsed = arm_ids.parse(account)
            in_scope = parsed is None or not wanted or parsed.subscription.lower() in wanted
            if in_scope and account.lower() not in listed:
                changed.setdefault(account.lower(), account)  # stored but gone: resolves its findings
        report.listed = len(listed)
        return changed

    # -- the sweep, fanned out: the timer only plans -----------------------------------------------------
    async def plan_sweep(self, subscriptions: Sequence[str], full: bool) -> SweepReport:
        """The timer's whole job: one sweep message per subscription (each lists, then queues its
        accounts in batches), then windows nobody takes care of are re-queued."""
        if self.enqueue_work is None:
            raise RuntimeError("a planned sweep needs a work queue")
        report = SweepReport()
        now = self.clock()
        for subscription in subscriptions:
            work = Work(
                WorkKind.SWEEP,
                subscription=subscription,
                full=full,
                origin="sweep",
                sweep_round=sweep_round(now),
                since=now,
            )
            await asyncio.to_thread(self.enqueue_work, work, 0.0)
        await self._requeue_lost(report)
        return report

    async def _sweep_page(self, work: Work, readers: Readers) -> WorkResult:
        """One subscription of a planned sweep: list it (Resource Graph's three queries, or ARM's
        account list), decide which accounts to evaluate, queue them in batches."""
        report = SweepReport()
        subscription = work.subscription
        if work.full and callable(getattr(readers.accounts, "list_account_page", None)):
            return await self._sweep_arm_page(work, readers)
        if work.full:
            accounts = {a.lower(): a for a in await readers.accounts.list_account_ids(subscription)}
            report.listed = len(accounts)
            for account in await asyncio.to_thread(self.store.all_account_ids):
                parsed = arm_ids.parse(account)
                if parsed is not None and parsed.subscription.lower() == subscription.lower():
                    accounts.setdefault(account.lower(), account)  # stored but gone: resolves its findings
        else:
            accounts = await self._changed_by_graph([subscription], readers, report)
        queued = 0
        if accounts:
            why = _FanOut(TargetKind.ACCOUNT, Provenance(source="sweep"), f"sweep:{subscription}")
            queued = await self._fan_out(list(accounts.values()), why)
        log.info(
            "sweep of %s: %d listed, %d unchanged, %d to evaluate in %d batch(es)",
            subscription,
            report.listed,
            report.unchanged,
            len(accounts),
            queued,
        )
        return WorkResult(work, queued=queued, listed=report.listed)

    async def _sweep_arm_page(self, work: Work, readers: Readers) -> WorkResult:
        """One page of a subscription's full ARM sweep: list the page (raw bodies), evaluate the
        page's accounts from their listed bodies, then queue the next page as its own message. Only
        those that may be in a perimeter (``shared.core.membership``) have their NSP configurations
        read, and only associated ones their features; the rest are recorded as in no perimeter.
        Accounts not started inside the budget, or failed, go on as batches (never dropped). The
        last page queues the subscription's stored accounts that no page evaluated since the sweep
        began (gone ones: evaluating them resolves their findings)."""
        subscription = work.subscription
        send = self.enqueue_work
        if send is None:
            raise RuntimeError("a planned sweep needs a work queue")
        accounts_reader: Any = readers.accounts
        listed_at = self.clock()
        next_link, bodies = await accounts_reader.list_account_page(subscription, work.page)
        queued = 0
        associations_of = getattr(accounts_reader, "perimeter_associations", None)
        associated: Mapping[str, Any] = await associations_of(subscription) if callable(associations_of) else {}
        round_ = work.sweep_round or sweep_round(listed_at)
        sweeps = max(self.verify_sweeps, 1)
        page = {str(b["id"]).lower(): b for b in bodies}
        ids = tuple(str(b["id"]) for b in page.values())
        provenance = Provenance(source="sweep")
        origin = f"sweep:{subscription}"
        deadline = self._deadline()
        gate = asyncio.Semaphore(self.concurrency)

        async def one(body: Mapping[str, Any]) -> AccountResult | None:
            async with gate:
                if deadline is not None and self.clock() >= deadline:
                    return None
                listed = Listed(body, listed_at, associated, round_, sweeps)
                return await self.evaluate_account(str(body["id"]), provenance, readers, TargetKind.ACCOUNT, listed)

        outcomes = list(await asyncio.gather(*(one(b) for b in page.values()), return_exceptions=True))
        if next_link:
            # After this page's work, not before: a subscription's pages share its ARM read bucket,
            # so pages side by side read no faster; they only ran each other out of budget, and
            # the accounts a page cannot start go on as batches, which read each account whole
            # (10,000 accounts: 13,625 reads with the pages side by side, not 6,920).
            await asyncio.to_thread(send, replace(work, page=next_link), 0.0)
            queued += 1
        batch = Work(WorkKind.ACCOUNTS, ids, TargetKind.ACCOUNT, provenance, origin=origin)
        result = await self._settle(batch, outcomes) if ids else WorkResult(batch)
        if next_link is None and work.since:
            stored = await asyncio.to_thread(self.store.all_account_ids)
            wanted = subscription.lower()
            unlisted = [
                a
                for a in stored
                if a.lower() not in page
                and (arm_ids.parse(a) is not None)
                and arm_ids.parse(a).subscription.lower() == wanted  # type: ignore[union-attr]
            ]
            if unlisted:
                # After the other pages' invocations (each within the budget): whatever they have
                # not evaluated since the sweep began is not listed any more.
                items = batches(unlisted, TargetKind.ACCOUNT, provenance, origin, None, self.batch_size)
                for item in items:
                    await asyncio.to_thread(send, replace(item, since=work.since), self.budget_seconds)
                queued += len(items)
        log.info(
            "full sweep of %s, page %s: %d listed, %d evaluated, %d message(s) queued",
            subscription,
            "first" if not work.page else "next",
            len(ids),
            result.evaluated,
            result.queued + queued,
        )
        return replace(result, work=work, queued=result.queued + queued, listed=len(ids))

    async def _requeue_lost(self, report: SweepReport) -> None:
        now = self.clock()
        for marker in await asyncio.to_thread(self.store.overdue_pending, now, max(self.window_seconds, 60.0)):
            await asyncio.to_thread(self.enqueue, marker.target, 0.0)
            report.requeued += 1
        report.backing_off = len(await asyncio.to_thread(self.store.failing_pending))

    async def sweep(self, subscriptions: Sequence[str], readers: Readers, use_graph: bool = False) -> SweepReport:
        """Reconcile everything in scope. ``use_graph``: list with Resource Graph and evaluate only
        accounts whose summary, VHD VMs or blob backups changed (a cheap frequent sweep); otherwise list with ARM and
        evaluate every account (the full sweep, which also catches drift in child resources that
        the summary cannot show). Then re-queue windows nobody takes care of."""
        report = SweepReport()
        accounts: dict[str, str] = {}
        if use_graph:
            accounts = await self._changed_by_graph(subscriptions, readers, report)
        else:
            for subscription in subscriptions:
                try:
                    for account in await readers.accounts.list_account_ids(subscription):
                        accounts.setdefault(account.lower(), account)
                except Exception as exc:
                    report.failed.append(f"list {subscription}: {type(exc).__name__}")
                    log.warning("sweep cannot list subscription %s: %s", subscription, type(exc).__name__)
            for account in await asyncio.to_thread(self.store.all_account_ids):
                accounts.setdefault(account.lower(), account)  # stored but gone: resolves its findings
            report.listed = len(accounts)
        provenance = Provenance(source="sweep")
        gate = asyncio.Semaphore(self.concurrency)

        async def one(account_id: str) -> None:
            async with gate:
                try:
                    result = await self.evaluate_account(account_id, provenance, readers)
                except Exception as exc:
                    report.failed.append(f"{account_id}: {type(exc).__name__}")
                    log.warning("sweep failed on %s: %s", account_id, type(exc).__name__)
                    return
                report.transitions += len(result.transitions)
                if result.partial:  # applied as far as read; the next sweep reads it again
                    report.partial.append(account_id)

        await asyncio.gather(*(one(a) for a in accounts.values()))
        report.accounts = len(accounts)
        await self._requeue_lost(report)
        return report


def _rules_judged(cause: TargetKind, evaluation: Evaluation | None) -> frozenset[str] | None:
    """The rules an evaluation may open or resolve findings of: those its cause judges
    (``Rule.judged_by``), less those whose evidence it did not read (LINKED_READS; their findings
    and references are carried forward)."""
    rules = rules_judged_by(cause)
    not_read = set(evaluation.snapshot.not_read) if evaluation is not None else set()
    unjudged = {rule for rule, part in LINKED_READS.items() if part in not_read}
    if not unjudged:
        return rules
    from shared.core.rules import RULES_BY_ID

    return frozenset(RULES_BY_ID if rules is None else rules) - unjudged


@dataclass(frozen=True)
class _Read:
    """One read of an account, to commit: the row it was read against (None: none was stored),
    what it evaluated to (None: the account is gone) and when the read began."""

    account_id: str
    stored: Versioned[AccountState] | None
    evaluation: Evaluation | None
    started: float


@dataclass(frozen=True)
class _FanOut:
    """What the batch messages of one fan-out share: why their accounts are evaluated, what fanned
    them out, and a perimeter's Key Vault associations as read once by whoever fanned them out."""

    cause: TargetKind
    provenance: Provenance
    origin: str
    members: Mapping[str, Sequence[str]] | None = None


def _window_fan_out(target: Target, claim: PendingMarker, readers: Readers) -> _FanOut:
    """A window's accounts, fanned out with the associations this invocation has read by now."""
    return _FanOut(target.kind, claim.provenance, target.key, _vault_members(readers, target))


def _window_outcomes(
    inline: Sequence[str], outcomes: Sequence[AccountResult | BaseException | None]
) -> tuple[list[AccountResult], list[str], str]:
    """A window's evaluations: the results, the accounts the budget left unstarted, and the first
    failure ("" for none). A cancellation is raised: the lease lapses by itself."""
    results: list[AccountResult] = []
    deferred: list[str] = []
    error = ""
    for account, outcome in zip(inline, outcomes, strict=True):
        if outcome is None:
            deferred.append(account)  # the budget ran out before it started
        elif isinstance(outcome, AccountResult):
            results.append(outcome)
        elif isinstance(outcome, Exception):
            error = error or f"{arm_ids.account_name_of(account)}: {_reason(outcome)}"
        else:
            raise outcome
    return results, deferred, error


def _partial_read(results: Sequence[AccountResult]) -> str:
    """The failure a partial read is ("" for none): applied as far as read, read again later."""
    partial = [r.account_id for r in results if r.partial]
    if not partial:
        return ""
    parts = sorted({p for r in results for p in r.partial})
    return f"partial read of {len(partial)} account(s) ({', '.join(parts)}), e.g. {partial[0]}"


def _vault_members(readers: Readers, target: Target) -> dict[str, list[str]] | None:
    """A perimeter target's Key Vault associations as this invocation read them (resolving the
    target read the association list), for the batches it fans out."""
    known = getattr(readers.accounts, "known_members", None)
    if target.kind is not TargetKind.PERIMETER or not callable(known):
        return None
    found = known(target.resource_id)
    if found is None:
        return None
    return {target.resource_id.lower(): [m for m in found if _VAULT_TYPE in m.lower()]}


def _batch_failing(work: Work, failed: Sequence[str], reason: str, attempts: int, retry_in: float) -> Transition:
    """The one alert for a batch whose accounts keep failing (keyed on the batch, so a redelivered
    message records the same delivery)."""
    import hashlib

    digest = hashlib.sha256("\n".join(sorted(a.lower() for a in failed)).encode()).hexdigest()[:16]
    return Transition(
        kind=TransitionKind.OPENED,
        rule_id=EVALUATION_FAILING_RULE.id,
        resource_id=failed[0],
        perimeter_id=None,
        severity=EVALUATION_FAILING_RULE.severity.label,
        title=EVALUATION_FAILING_RULE.title,
        summary=f"Evaluation of {len(failed)} account(s) from {work.origin or 'a batch'} failed {attempts} time(s) "
        f"in a row: {reason}. Retrying with back-off (next in {retry_in:.0f} s, doubling up to a day).",
        key=f"failing|batch|{work.origin}|{digest}|{work.provenance.event_ids[:1]!r}",
        evidence={"accounts": list(failed)[:50], "reason": reason, "attempts": attempts},
        provenance=Provenance(event_ids=work.provenance.event_ids, source="sweep"),
    )


def _newer_profile(previous: ProfileState, current: ProfileState) -> bool:
    """Whether ``current`` should replace ``previous``: different rules, and not an older read of
    them (ARM increments ``accessRulesVersion`` on every change of a profile's rules)."""
    old, new = previous.access_rules_version, current.access_rules_version
    if old is not None and new is not None and new < old:
        return False
    return (old, previous.rules) != (new, current.rules)
