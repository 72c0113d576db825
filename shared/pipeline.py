"""The event pipeline: intake -> coalesce -> evaluate (gather, decide, apply) -> transitions.

The function app and the CLI's ``replay`` drive this same class; only the edges differ
(Table storage + Storage queue + ARM in Azure, SQLite + an in-memory queue + an estate offline).

- ``intake``: parse events, map them to targets, drop what is out of scope, and open or join
  each target's coalescing window (one queue message per window).
- ``evaluate_pending``: claim a target's window, resolve it to storage accounts, and evaluate
  each: gather (read through the SDK), decide (pure rules + diff), apply (conditional writes,
  re-deciding on a lost race), then hand the transitions to the sink.
- ``sweep``: re-evaluate every account in scope and everything stored, re-queue lost windows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from shared import arm_ids
from shared.adapters.arm_reader import AccountNotFound, ArmReader, ClientFactory, TargetReads
from shared.changes import ChangeEvent, Provenance, Target, TargetKind, Transition
from shared.config import RulesConfig
from shared.drift import decide_account, decide_profile, profile_state_of
from shared.evaluate import evaluate
from shared.events import EventError, parse_event
from shared.model import Evaluation, PerimeterView
from shared.state.base import AccountState, ConflictError, StateStore
from shared.targeting import Scope, targets_for

log = logging.getLogger(__name__)

_MAX_CONFLICT_RETRIES = 5

# Which findings an evaluation may open or resolve, by what caused it (None = every rule).
# An account event or the sweep judges everything; a perimeter change judges what depends on
# the perimeter; a VM, backup or vault change judges only its own rule.
RULES_FOR_TARGET: dict[TargetKind, frozenset[str] | None] = {
    TargetKind.ACCOUNT: None,
    TargetKind.PERIMETER: frozenset(
        {
            "association-not-enforced",
            "inbound-rule-too-broad",
            "service-tag-rule",
            "subscription-rule",
            "perimeter-provisioning-issue",
            "cmk-vault-outside-perimeter",
        }
    ),
    TargetKind.VIRTUAL_MACHINE: frozenset({"unmanaged-disk"}),
    TargetKind.BACKUP_INSTANCE: frozenset({"azure-backup"}),
    TargetKind.KEY_VAULT: frozenset({"cmk-vault-outside-perimeter"}),
}
_PERIMETER_AWARE = {TargetKind.ACCOUNT, TargetKind.PERIMETER}


class IncompleteEvaluation(Exception):
    """Some reads failed: what could be decided was applied, the rest needs another attempt
    (the caller re-queues the target rather than treating the window as done)."""


class TransitionSink(Protocol):
    def emit(self, transitions: Sequence[Transition]) -> None: ...


class CollectingSink:
    """Keeps transitions in memory (replay, tests)."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    def emit(self, transitions: Sequence[Transition]) -> None:
        self.transitions.extend(transitions)


Enqueue = Callable[[Target, float], None]


@dataclass
class IntakeReport:
    accepted: int = 0
    duplicates: int = 0
    windows_opened: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


@dataclass
class SweepReport:
    accounts: int = 0  # accounts evaluated
    listed: int = 0  # accounts in scope (listed by ARM or Resource Graph) plus stored ones
    unchanged: int = 0  # skipped by the graph sweep: summary digest equal to the stored one
    transitions: int = 0
    failed: list[str] = field(default_factory=list)
    requeued: int = 0


def provenance_of(event: ChangeEvent) -> Provenance:
    return Provenance(
        event_ids=(event.event_id,),
        actors=(event.actor,),
        operation_names=(event.operation_name,) if event.operation_name else (),
        correlation_ids=(event.correlation_id,) if event.correlation_id else (),
        event_times=(event.event_time,) if event.event_time else (),
    )


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")


class Pipeline:
    def __init__(
        self,
        clients: ClientFactory,
        store: StateStore,
        config: RulesConfig,
        scope: Scope,
        window_seconds: float,
        enqueue: Enqueue,
        sink: TransitionSink,
        clock: Callable[[], float] = time.time,
        concurrency: int = 8,
    ) -> None:
        self.clients = clients
        self.store = store
        self.config = config
        self.scope = scope
        self.window = window_seconds
        self.enqueue = enqueue
        self.sink = sink
        self.clock = clock
        self.concurrency = concurrency
        self._partial: set[str] = set()  # accounts whose last read was partial (see evaluate_target)

    # -- intake --------------------------------------------------------------------------------
    def intake(self, raw_events: Iterable[Mapping[str, Any]]) -> IntakeReport:
        """Bad events are logged and counted; they never stop the others. Store failures raise
        (the runtime must retry the delivery rather than lose it)."""
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
        decision = targets_for(event, self.scope)
        if decision.dropped:
            log.info("event %s dropped: %s", event.event_id, decision.dropped)
            report.dropped[decision.category] += 1
            return
        if self.store.seen_events([event.event_id]):
            log.info("event %s already processed (re-delivery)", event.event_id)
            report.duplicates += 1
            return
        provenance = provenance_of(event)
        now = self.clock()
        for target in decision.targets:
            if self.store.add_pending(target, provenance, self.window, now):
                self.enqueue(target, self.window)
                report.windows_opened += 1
        # Recorded only after the windows hold it: a crash before this line means a retry
        # re-adds the event (merging is idempotent) instead of dropping it as "seen".
        if self.store.record_events([event.event_id]):
            report.accepted += 1
        else:
            report.duplicates += 1

    # -- evaluation ------------------------------------------------------------------------------
    async def evaluate_pending(self, target: Target) -> list[Transition]:
        marker = await asyncio.to_thread(self.store.claim_pending, target)
        if marker is None:
            log.info("no open window for %s (already evaluated)", target.key)
            return []
        try:
            return await self.evaluate_target(target, marker.provenance)
        except BaseException:
            await asyncio.to_thread(self.store.release_pending, marker, self.clock())
            raise

    async def resolve(self, target: Target) -> list[str]:
        """The storage accounts a target stands for: as ARM says now, plus as stored before."""
        if target.kind is TargetKind.ACCOUNT:
            return [target.resource_id]
        reads = TargetReads(self.clients)
        stored_key = target.resource_id
        found: list[str] = []
        if target.kind is TargetKind.PERIMETER:
            found = await reads.perimeter_storage_accounts(target.resource_id)
        elif target.kind is TargetKind.VIRTUAL_MACHINE:
            names = await reads.vm_vhd_account_names(target.resource_id)
            found = await self._account_ids_by_name(names, target.resource_id)
        elif target.kind is TargetKind.BACKUP_INSTANCE:
            source = await reads.backup_datasource(target.resource_id)
            found = [source] if source else []
        elif target.kind is TargetKind.KEY_VAULT:
            parsed = arm_ids.parse(target.resource_id)
            stored_key = parsed.name.lower() if parsed else target.resource_id.lower()
        stored = await asyncio.to_thread(self.store.accounts_for, target.kind, stored_key)
        return list({a.lower(): a for a in [*found, *stored]}.values())

    async def _account_ids_by_name(self, names: Sequence[str], near: str) -> list[str]:
        if not names:
            return []
        wanted = {n.lower() for n in names}
        known = await asyncio.to_thread(self.store.all_account_ids)
        hits = {arm_ids.account_name_of(a).lower(): a for a in known if arm_ids.account_name_of(a).lower() in wanted}
        missing = wanted - set(hits)
        parsed = arm_ids.parse(near)
        if missing and parsed is not None:  # not seen before: list the VM's subscription once
            for account in await ArmReader(self.clients).list_account_ids(parsed.subscription):
                if arm_ids.account_name_of(account).lower() in missing:
                    hits[arm_ids.account_name_of(account).lower()] = account
        return list(hits.values())

    async def evaluate_target(self, target: Target, provenance: Provenance) -> list[Transition]:
        accounts = await self.resolve(target)
        reader = ArmReader(self.clients)  # fresh per target: its lookups are cached for this run only
        gate = asyncio.Semaphore(self.concurrency)

        async def one(account_id: str) -> list[Transition]:
            async with gate:
                return await self.evaluate_account(account_id, provenance, reader, target.kind)

        results = await asyncio.gather(*(one(a) for a in accounts))
        transitions = [t for batch in results for t in batch]
        partial = [a for a in accounts if a.lower() in self._partial]
        for account in partial:
            self._partial.discard(account.lower())
        if partial:
            raise IncompleteEvaluation(f"partial read of {len(partial)} account(s), e.g. {partial[0]}")
        return transitions

    async def gather(self, account_id: str, reader: ArmReader) -> Evaluation | None:
        try:
            snapshot = await reader.read_account(account_id)
        except AccountNotFound:
            return None
        return evaluate(snapshot, self.config, datetime.fromtimestamp(self.clock(), UTC).date())

    async def evaluate_account(
        self,
        account_id: str,
        provenance: Provenance,
        reader: ArmReader | None = None,
        cause: TargetKind = TargetKind.ACCOUNT,
    ) -> list[Transition]:
        evaluation = await self.gather(account_id, reader or ArmReader(self.clients))
        if evaluation is not None and evaluation.snapshot.incomplete:
            self._partial.add(account_id.lower())
        return await asyncio.to_thread(self.apply, account_id, evaluation, provenance, True, cause)

    def apply(
        self,
        account_id: str,
        evaluation: Evaluation | None,
        provenance: Provenance,
        emit: bool = True,
        cause: TargetKind = TargetKind.ACCOUNT,
    ) -> list[Transition]:
        """Decide against stored state and write it; on a lost race, re-read and decide again.

        Transitions go to the sink (the outbox) *before* the state write: a crash in between
        re-detects the same transitions next time, and their deterministic delivery ids make the
        second recording a no-op. The other order would lose an alert on a crash."""
        now = _iso(self.clock())
        perimeter_aware = cause in _PERIMETER_AWARE
        for _ in range(_MAX_CONFLICT_RETRIES):
            stored = self.store.get_account(account_id)
            previous = stored.value if stored else None
            decision = decide_account(previous, evaluation, provenance, now, RULES_FOR_TARGET[cause], perimeter_aware)
            if emit and decision.transitions:
                self.sink.emit(decision.transitions)
            try:
                self._write_account(account_id, stored.etag if stored else None, previous, decision.new_state)
            except ConflictError:
                log.info("lost a write race on %s; deciding again", account_id)
                continue
            transitions = list(decision.transitions) if emit else []
            if evaluation is not None and perimeter_aware:
                for view in evaluation.snapshot.perimeters:
                    transitions.extend(self._apply_profile(view, account_id, provenance, emit))
            return transitions
        raise ConflictError(f"gave up on {account_id} after {_MAX_CONFLICT_RETRIES} write races")

    def _write_account(
        self, account_id: str, etag: str | None, previous: AccountState | None, new: AccountState | None
    ) -> None:
        if new is None:
            if previous is not None and etag is not None:
                self.store.delete_account(account_id, etag)
            return
        if previous is not None and _same_state(previous, new):
            return  # nothing changed: skip the write (the common case for sweeps and re-deliveries)
        self.store.put_account(new, etag)

    def _apply_profile(
        self, view: PerimeterView, account_id: str, provenance: Provenance, emit: bool
    ) -> list[Transition]:
        current = profile_state_of(view)
        for _ in range(_MAX_CONFLICT_RETRIES):
            stored = self.store.get_profile(view.perimeter_id, view.profile_name)
            previous = stored.value if stored else None
            if previous == current:
                return []
            transitions = decide_profile(previous, current, account_id, provenance, self.config.params)
            if emit and transitions:
                self.sink.emit(transitions)
            try:
                self.store.put_profile(current, stored.etag if stored else None)
            except ConflictError:
                continue
            return list(transitions) if emit else []
        raise ConflictError(f"gave up on profile {view.profile_name} of {view.perimeter_id}")

    # -- baseline and sweep ------------------------------------------------------------------------
    def record_baseline(self, evaluations: Iterable[Evaluation]) -> int:
        """Store evaluations as the baseline without emitting anything (``scan --state``)."""
        count = 0
        for evaluation in evaluations:
            self.apply(evaluation.snapshot.id, evaluation, Provenance(source="scan"), emit=False)
            count += 1
        return count

    async def _changed_by_graph(self, subscriptions: Sequence[str], report: SweepReport) -> dict[str, str]:
        """Accounts whose Resource Graph summary differs from the stored state (or is new)."""
        from shared.adapters.resource_graph import ResourceGraphReader

        summaries = await ResourceGraphReader(self.clients.graph()).account_summaries(subscriptions)
        changed: dict[str, str] = {}
        for summary in summaries:
            stored = await asyncio.to_thread(self.store.get_account, summary.id)
            if stored is not None and stored.value.summary_digest == summary.digest:
                report.unchanged += 1
                continue
            changed[summary.id.lower()] = summary.id
        listed = {s.id.lower() for s in summaries}
        for account in await asyncio.to_thread(self.store.all_account_ids):
            if account.lower() not in listed:
                changed.setdefault(account.lower(), account)  # stored but gone: resolves its findings
        report.listed = len(listed)
        return changed

    async def sweep(self, subscriptions: Sequence[str], use_graph: bool = False) -> SweepReport:
        """Reconcile everything in scope. ``use_graph``: list with Resource Graph and evaluate only
        accounts whose summary changed (a cheap frequent sweep); otherwise list with ARM and
        evaluate every account (the full sweep, which also catches drift in child resources that
        the summary cannot show)."""
        report = SweepReport()
        reader = ArmReader(self.clients)
        accounts: dict[str, str] = {}
        if use_graph:
            accounts = await self._changed_by_graph(subscriptions, report)
        else:
            for subscription in subscriptions:
                try:
                    for account in await reader.list_account_ids(subscription):
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
                    report.transitions += len(await self.evaluate_account(account_id, provenance, reader))
                except Exception as exc:
                    report.failed.append(f"{account_id}: {type(exc).__name__}")
                    log.warning("sweep failed on %s: %s", account_id, type(exc).__name__)

        await asyncio.gather(*(one(a) for a in accounts.values()))
        report.accounts = len(accounts)
        for marker in await asyncio.to_thread(self.store.overdue_pending, self.clock(), max(self.window, 60.0)):
            self.enqueue(marker.target, 0.0)
            report.requeued += 1
        return report


def _same_state(a: AccountState, b: AccountState) -> bool:
    return (
        a.findings,
        a.associations,
        a.key_vault_name,
        a.vm_ids,
        a.backup_instance_ids,
        a.snapshot_digest,
    ) == (
        b.findings,
        b.associations,
        b.key_vault_name,
        b.vm_ids,
        b.backup_instance_ids,
        b.snapshot_digest,
    )
