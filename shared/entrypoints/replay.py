"""Offline replay: recorded events -> the same intake/coalesce/evaluate/diff as the function app.

Edges for the command line: an estate instead of ARM, SQLite instead of Table storage, and an
in-memory queue whose windows all close once the events are in (the estate already shows the
state after the events, so evaluating earlier would read the same thing).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.adapters import runtime
from shared.adapters.estate import Estate
from shared.core.changes import Target, Transition, transition_to_dict
from shared.core.config import RulesConfig
from shared.core.model import AccountResult
from shared.core.targeting import Scope
from shared.service.pipeline import CollectingSink, IntakeReport, Pipeline, TransitionSink, WindowStatus, deliver

_MAX_EVENTS_FILE = 64 * 1024 * 1024


class ReplayInputError(ValueError):
    """The events file is missing or malformed; the message names the problem."""


@dataclass
class ReplayResult:
    transitions: list[Transition] = field(default_factory=list)
    intake: IntakeReport = field(default_factory=IntakeReport)
    evaluations: int = 0
    errors: list[str] = field(default_factory=list)
    deliveries: dict[str, int] = field(default_factory=dict)  # destination -> delivered
    undelivered: int = 0  # still pending (being retried) or failed


class MemoryQueue:
    """The evaluation queue of a replay: one entry per opened window, in order."""

    def __init__(self) -> None:
        self.targets: list[Target] = []

    def send(self, target: Target, delay_seconds: float) -> None:
        self.targets.append(target)

    def drain(self) -> list[Target]:
        taken, self.targets = self.targets, []
        return taken


def _open_store(path: str | None) -> Any:
    from shared.wiring import sqlite_store

    if path is None:
        path = str(Path(tempfile.mkdtemp(prefix="nsp-drift-")) / "state.sqlite")
    return sqlite_store(path)


def load_events(path: Path) -> list[Any]:
    try:
        if path.stat().st_size > _MAX_EVENTS_FILE:
            raise ReplayInputError(f"events file {path} is larger than 64 MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReplayInputError(f"events file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ReplayInputError(f"events file {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ReplayInputError(f"events file {path}: expected a JSON array of events")
    return data


def _baseline_pipeline(
    store: Any, config: RulesConfig, scope: Scope, clock: Callable[[], float] | None = None
) -> Pipeline:
    """A pipeline that only records baselines: it opens no window and emits nothing."""
    pipeline = Pipeline(
        store=store, outbox=CollectingSink(), enqueue=MemoryQueue().send, config=config, scope=scope, window_seconds=0.0
    )
    return pipeline if clock is None else replace(pipeline, clock=clock)


def record_baseline_estate(
    estate: Estate, store: Any, config: RulesConfig, clock: Callable[[], float] | None = None
) -> int:
    """Evaluate every account of an estate and store the results as the baseline (``clock``: when
    it was read, e.g. the previous day's sweep for a benchmark's "before" estate)."""
    from shared.service.scan import accounts_in_scope, scan
    from shared.wiring import EstateClients, arm_reader

    today = datetime.now(UTC).date()

    async def run() -> list[AccountResult]:
        reader = arm_reader(EstateClients(estate))
        ids = await accounts_in_scope(reader, sorted(estate.subscriptions))
        return await scan(reader, ids, config, today)

    results = runtime.run(run())
    pipeline = _baseline_pipeline(store, config, Scope(tuple(sorted(estate.subscriptions))), clock)
    return pipeline.record_baseline(r.evaluation for r in results if r.evaluation is not None)


def record_scan(state_path: str, results: Sequence[AccountResult], config: RulesConfig) -> int:
    """``scan --state``: store a scan's evaluations as the baseline a later replay diffs against."""
    store = _open_store(state_path)
    try:
        pipeline = _baseline_pipeline(store, config, Scope(()))
        return pipeline.record_baseline(r.evaluation for r in results if r.evaluation is not None)
    finally:
        store.close()


class _Tee:
    """Keeps the transitions for the report and forwards them to the outbox."""

    def __init__(self, collect: CollectingSink, outbox: Any) -> None:
        self.collect, self.outbox = collect, outbox

    def emit(self, transitions: Sequence[Transition]) -> None:
        self.collect.emit(transitions)
        self.outbox.emit(transitions)


_REPLAY_ROUNDS = 3  # follow-up windows and retries queued by an evaluation get this many more rounds


def replay(  # noqa: PLR0913 - the replay command's options, one per CLI flag, each named
    events_path: Path,
    estate_path: Path,
    state_path: str | None = None,
    baseline_path: Path | None = None,
    config: RulesConfig | None = None,
    window: float = 30.0,
    destinations: Sequence[Any] = (),
    env: Mapping[str, str] | None = None,
) -> ReplayResult:
    """``destinations`` (shared.adapters.notify.destinations configs): deliver the transitions to them."""
    from shared.wiring import EstateClients, load_estate, readers_for

    config = config or RulesConfig()
    raw_events = load_events(events_path)
    estate = load_estate(estate_path)
    store = _open_store(state_path)
    try:
        if baseline_path is not None:
            record_baseline_estate(load_estate(baseline_path), store, config)
        queue, collected = MemoryQueue(), CollectingSink()
        sink: TransitionSink = collected
        dispatcher = None
        if destinations:
            from shared.service.dispatch import Dispatcher, OutboxSink
            from shared.wiring import senders as build_senders

            senders, digests = build_senders(destinations, env)
            sink = _Tee(collected, OutboxSink(store, destinations))
            dispatcher = Dispatcher(store, senders, digests)
        scope = Scope(tuple(sorted(estate.subscriptions)))
        pipeline = Pipeline(
            store=store, outbox=sink, enqueue=queue.send, config=config, scope=scope, window_seconds=window
        )
        result = ReplayResult()
        good = [e for e in raw_events if isinstance(e, dict)]
        result.errors.extend(
            f"element {i}: not a JSON object" for i, e in enumerate(raw_events) if not isinstance(e, dict)
        )
        result.intake = pipeline.intake(good)
        result.errors.extend(result.intake.errors)
        readers = readers_for(EstateClients(estate))

        async def close_windows() -> None:
            # The estate already shows the state after the events: every window closes now.
            for _ in range(1 + _REPLAY_ROUNDS):
                targets = queue.drain()
                if not targets:
                    return
                for target in targets:
                    outcome = await pipeline.evaluate_window(target, readers)
                    if outcome.status in (WindowStatus.DONE, WindowStatus.RETRY):
                        result.evaluations += 1
                    if outcome.status is WindowStatus.RETRY:
                        result.errors.append(f"{target.key}: {outcome.error}")
            left = {t.key for t in queue.drain()}
            result.errors.extend(f"{key}: not evaluated (still retrying)" for key in sorted(left))

        runtime.run(close_windows())
        result.transitions = list(collected.transitions)
        dispatched = deliver(dispatcher, include_digests=True)
        if dispatched is not None:
            result.deliveries = dict(dispatched.by_destination)
            result.undelivered = dispatched.retried + dispatched.failed + dispatched.deferred + dispatched.held
        return result
    finally:
        store.close()


def render_transitions(result: ReplayResult, fmt: str) -> str:
    ordered = sorted(result.transitions, key=lambda t: (t.resource_id.lower(), t.rule_id, t.key))
    if fmt == "jsonl":
        return "".join(json.dumps(transition_to_dict(t)) + "\n" for t in ordered)
    lines = [f"{'TRANSITION':<9}  {'SEVERITY':<8}  {'RULE':<31}  {'RESOURCE':<18}  SUMMARY"]
    for t in ordered:
        name = t.resource_id.rstrip("/").rsplit("/", 1)[-1]
        lines.append(f"{t.kind.value:<9}  {t.severity:<8}  {t.rule_id:<31}  {name:<18}  {t.summary}")
        lines.append(
            f"{'':<9}  {'':<8}  by {t.provenance.changed_by}; events {', '.join(t.provenance.event_ids) or '-'}"
        )
    intake = result.intake
    lines.append("")
    lines.append(
        f"{len(result.transitions)} transition(s) from {intake.accepted} event(s) "
        f"({intake.duplicates} duplicate(s), {sum(intake.dropped.values())} dropped) "
        f"in {result.evaluations} evaluation(s)"
    )
    if result.deliveries or result.undelivered:
        sent = ", ".join(f"{name}: {count}" for name, count in sorted(result.deliveries.items()))
        lines.append(f"delivered: {sent or 'nothing'}; not yet delivered: {result.undelivered}")
    return "\n".join(lines) + "\n"
